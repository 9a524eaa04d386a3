//! The API's OpenAPI 3.1 description, assembled from the handlers themselves: each route is
//! registered through [`routes!`], which reads the handler's `#[utoipa::path]`, so a route
//! cannot exist without its description. What every operation shares (the bearer scheme, 401,
//! 500 and 503, the form's encoding) is added here once, by [`Conventions`].
//!
//! The document is committed as `shared/openapi.json`; a test fails when the two differ, and
//! `make test` runs schemathesis against a real `labelq serve` to keep the hand-written parts
//! (statuses, headers) honest.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::encoding::Encoding;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi as _, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::upload::IMAGE_FIELD;

/// The tag of the image operations.
pub const TAG: &str = "images";
/// The bearer scheme's name in `components.securitySchemes`.
const BEARER: &str = "bearer";
const PROBLEM_JSON: &str = "application/problem+json";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "labelq",
        description = "Asynchronous image labelling: submit an image and get 202 Accepted with a `Location` to \
                       poll; a worker labels it (Amazon Rekognition or the built-in model), and the status \
                       resource gives the labels, shaped like Rekognition DetectLabels'. Errors are RFC 9457 \
                       problems whose `type` is `https://labelq.dev/problems/<slug>`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags((name = TAG, description = "Images and their labelling jobs, each scoped to its owner.")),
    components(schemas(super::problem::Problem)),
)]
struct ApiDoc;

/// The routes with their descriptions; without uploads where this process only serves reads,
/// without direct uploads where no upload targets are issued,
/// without live push where it cannot hold connections open.
pub fn routes(uploads: bool, direct_uploads: bool, live: bool, default_callbacks: bool) -> OpenApiRouter<ApiState> {
    let images = if uploads { routes!(super::list_images, super::submit_image) } else { routes!(super::list_images) };
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(images)
        .routes(routes!(super::get_image, super::delete_image))
        .routes(routes!(healthz))
        .routes(routes!(openapi_json));
    if direct_uploads {
        router = router.routes(routes!(super::direct_upload::reserve_upload));
    }
    if default_callbacks {
        router = router.routes(routes!(
            super::default_callback::get_default_callback,
            super::default_callback::set_default_callback,
            super::default_callback::delete_default_callback
        ));
    }
    if live {
        router = router.routes(routes!(super::events::follow_image)).routes(routes!(super::websocket::live_jobs));
        // The WebSocket's messages: no operation refers to them, so they are added by hand.
        use super::live_protocol::{LiveMessage, LiveRequest};
        let mut schemas = vec![
            (LiveRequest::name().into_owned(), LiveRequest::schema()),
            (LiveMessage::name().into_owned(), LiveMessage::schema()),
        ];
        LiveRequest::schemas(&mut schemas);
        LiveMessage::schemas(&mut schemas);
        router.get_openapi_mut().components.get_or_insert_with(Default::default).schemas.extend(schemas);
    }
    // After the routes: a modifier in the derive would run before there were any paths.
    Conventions.modify(router.get_openapi_mut());
    router
}

/// The whole API's description, as `labelq serve` serves it.
pub fn document() -> OpenApi {
    routes(true, true, true, true).into_openapi()
}

/// The serialised document, made once per router.
#[derive(Debug, Clone)]
pub struct Document(Arc<Bytes>);

impl Document {
    pub fn serve(document: &OpenApi) -> Self {
        // A document of strings and maps always serialises.
        Self(Arc::new(serde_json::to_vec_pretty(document).unwrap_or_default().into()))
    }
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "getOpenApi",
    security(()),
    responses((status = 200, description = "The OpenAPI document.", body = Object, content_type = "application/json")),
)]
async fn openapi_json(Extension(Document(bytes)): Extension<Document>) -> Response {
    let mut response = Bytes::clone(&bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Whether the process serves; no authentication.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    operation_id = "getHealth",
    security(()),
    responses((status = 200, description = "Serving.", body = Health)),
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The form a browser or `curl -F image=@photo.jpg` sends: one field, `image`, and no other.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema only: `upload` reads the form
pub struct ImageForm {
    /// The image, JPEG or PNG.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
}

/// The `{id}` of an image's resource.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a parameter description only: the handlers read the path themselves
pub struct ImageId {
    /// The image's id, as `Location` and `id` give it (a malformed one is simply not found).
    #[param(format = "uuid")]
    id: String,
}

/// `X-Request-Id`, which every operation takes and echoes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // a parameter description only: the access log reads the header
pub struct RequestIdHeader {
    /// Ties the request to its logs and its job's messages; echoed in the response. One is made
    /// when it is absent or unusable.
    #[param(rename = "X-Request-Id", nullable = false)]
    request_id: Option<String>,
}

/// What every operation shares, written once.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "On AWS, a JWT API Gateway's authorizer verifies (the owner is its `sub`); with \
                         `labelq serve`, a token from `--tokens-file` or `LABELQ_TOKENS`.",
                    ))
                    .build(),
            ),
        );
        doc.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        for item in doc.paths.paths.values_mut() {
            for operation in operations(item) {
                let public = operation.security.as_ref().is_some_and(|s| s.iter().all(is_empty_requirement));
                if !public {
                    shared_responses(operation);
                }
                form_encoding(operation);
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
}

fn is_empty_requirement(requirement: &SecurityRequirement) -> bool {
    serde_json::to_value(requirement).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
}

fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("Problem")))).build())
}

/// Failures any authenticated operation can answer.
fn shared_responses(operation: &mut Operation) {
    let seconds = || {
        HeaderBuilder::new()
            .schema(Some(<u32 as PartialSchema>::schema()))
            .description(Some("Seconds to wait before retrying with the same request."))
            .build()
    };
    let challenge =
        HeaderBuilder::new().schema(Some(<String as PartialSchema>::schema())).description(Some("`Bearer`.")).build();
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, response: ResponseBuilder| {
        responses.entry(status.to_owned()).or_insert_with(|| RefOr::T(response.build()));
    };
    add(
        "401",
        problem("`unauthorized`: no credentials, or credentials the API does not know.")
            .header("WWW-Authenticate", challenge),
    );
    add("500", problem("`internal`: the cause is logged, never returned."));
    add("503", problem("`service-unavailable`: a backend is down for now.").header("Retry-After", seconds()));
}

/// The form's image part carries its own type, one of the types the raw body takes.
fn form_encoding(operation: &mut Operation) {
    let Some(RefOr::T(body)) = operation.request_body.as_mut() else { return };
    if let Some(RefOr::T(form)) = body.content.get_mut("multipart/form-data") {
        let mut encoding = BTreeMap::new();
        encoding
            .insert(IMAGE_FIELD.to_owned(), Encoding::builder().content_type(Some("image/jpeg, image/png")).build());
        form.encoding = encoding;
    }
}
