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
