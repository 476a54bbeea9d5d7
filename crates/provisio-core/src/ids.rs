//! Typed record identifiers, so a client id can never be passed where a server id is meant.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Identifies a client.
    ClientId
);
id_type!(
    /// Identifies a reseller.
    ResellerId
);
id_type!(
    /// Identifies a server.
    ServerId
);
id_type!(
    /// Identifies a product.
    ProductId
);
id_type!(
    /// Identifies a service.
    ServiceId
);
id_type!(
    /// Identifies a handler (gate or notify).
    HandlerId
);
id_type!(
    /// Identifies one delivery of one event to one notify handler.
    DeliveryId
);
id_type!(
    /// Identifies an automation rule.
    RuleId
);
