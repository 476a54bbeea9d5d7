//! What the API shows of each record: the answer types live in `provisio_api::views` (so
//! the server and the typed client read one definition); this file converts the engine's
//! own shapes, which that crate cannot name.

pub use provisio_api::views::*;

pub fn product_view(v: provisio_engine::ProductView) -> ProductView {
    ProductView::new(v.product, v.extends_name, &v.effective)
}

pub fn job_detail_view(d: provisio_engine::JobDetail) -> JobView {
    JobView::with_history(d.job, d.attempts)
}

/// A handler with the signing secret it was just given, shown in this answer only.
pub fn handler_view(h: provisio_engine::HandlerWithSecret) -> HandlerView {
    use secrecy::ExposeSecret as _;
    let mut v = HandlerView::from(h.handler);
    v.secret = h.secret.map(|s| s.expose_secret().to_string());
    v
}
