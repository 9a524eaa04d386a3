//! [`ApiGatewayJwt`]: who is calling, as API Gateway's JWT authorizer verified it.

use http::request::Parts;
use lambda_http::request::RequestContext;

use crate::domain::OwnerId;
use crate::http::auth::{AuthError, Authenticator};

/// The owner is the `sub` claim API Gateway's JWT authorizer verified; a request without one
/// did not come through the authorizer and is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiGatewayJwt;

impl Authenticator for ApiGatewayJwt {
    fn authenticate(&self, parts: &Parts) -> Result<OwnerId, AuthError> {
        #[allow(irrefutable_let_patterns)]
        let Some(RequestContext::ApiGatewayV2(context)) = parts.extensions.get::<RequestContext>() else {
            return Err(AuthError("not an API Gateway HTTP API request"));
        };
        let sub = context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get("sub"))
            .ok_or(AuthError("the token has no sub claim"))?;
        OwnerId::parse(sub).map_err(|_| AuthError("the token's sub claim is not a valid owner"))
    }
}
