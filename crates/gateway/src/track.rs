//! The per-route metrics layer: times every routed request and counts its status class under
//! its route in [`crate::metrics`].

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::gateway::GatewayState;

/// The layer that times every routed request and counts its status class under its route
/// (a path template). Put on each route (`MethodRouter::layer`), so it knows its route without
/// `MatchedPath`; hand-written rather than `from_fn`: no boxed future, no service clone per
/// request (B6 in `docs/benchmarks.md`).
#[derive(Clone)]
pub(crate) struct Track {
    pub(crate) gw: GatewayState,
    pub(crate) route: &'static str,
}

impl<S> Layer<S> for Track {
    type Service = TrackService<S>;

    fn layer(&self, inner: S) -> TrackService<S> {
        TrackService {
            inner,
            track: self.clone(),
        }
    }
}

/// [`Track`] around one route.
#[derive(Clone)]
pub(crate) struct TrackService<S> {
    inner: S,
    track: Track,
}

impl<S> Service<Request> for TrackService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        TrackFuture {
            start: Instant::now(),
            inner: self.inner.call(request),
            track: Some(self.track.clone()),
        }
    }
}

pin_project! {
    /// The answer of a [`TrackService`], recorded when it is ready.
    pub(crate) struct TrackFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        track: Option<Track>,
    }
}

impl<F, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(track)) = (&out, this.track.take()) {
            track
                .gw
                .metrics
                .record(Some(track.route), this.start.elapsed(), response.status());
        }
        Poll::Ready(out)
    }
}
