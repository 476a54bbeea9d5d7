//! A field of a partial update (absent keeps, `null` clears, a value sets), defined with the
//! request bodies in `provisio_api::requests`.

pub use provisio_api::requests::Patch;
