//! Generated credentials. The reconciler creates these Secrets only when they are absent, so a
//! value, once stored, is never replaced: pods and clients keep working across reconciles.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::distr::Alphanumeric;
use telemetry_core::contract;

use super::{Component, RenderContext};
use crate::crd::BuiltInBroker;

/// Key of the AMQP URI in the broker credentials Secret.
pub const AMQP_URL_KEY: &str = "amqp-url";
/// Keys of the user name and password in the generated credentials Secrets.
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
/// Key of the MongoDB connection string in the MongoDB credentials Secret.
pub const MONGODB_URI_KEY: &str = "uri";
/// Name of the generated API token, which the API logs in place of the token.
pub const GENERATED_TOKEN_NAME: &str = "generated";
/// Key of the tokens file in the generated API tokens Secret.
pub const API_TOKENS_KEY: &str = "tokens";

/// User name of the built-in broker.
const BROKER_USER: &str = "telemetry";
/// Root user of the managed MongoDB.
const MONGODB_USER: &str = "telemetry";
/// Characters of a generated password or token: 32 alphanumerics are about 190 bits.
const SECRET_LENGTH: usize = 32;

/// Random values of the generated Secrets.
#[derive(Clone, Debug)]
pub struct SecretValues {
    pub broker_password: String,
    pub mongodb_password: String,
    pub api_token: String,
}

impl SecretValues {
    /// Fresh values from the thread-local CSPRNG.
    pub fn random() -> Self {
        Self {
            broker_password: random_string(),
            mongodb_password: random_string(),
            api_token: random_string(),
        }
    }
}

fn random_string() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(SECRET_LENGTH)
        .map(char::from)
        .collect()
}

pub fn broker_secret_name(pipeline: &str) -> String {
    format!("{pipeline}-broker-credentials")
}

pub fn mongodb_secret_name(pipeline: &str) -> String {
    format!("{pipeline}-mongodb-credentials")
}

pub fn api_tokens_secret_name(pipeline: &str) -> String {
    format!("{pipeline}-api-tokens")
}

/// Broker user, password and the AMQP URI that clients of the built-in broker use.
pub fn broker_credentials(
    ctx: &RenderContext,
    broker: &BuiltInBroker,
    values: &SecretValues,
) -> Secret {
    // The password is alphanumeric, so it needs no percent-encoding in the URI. `%2f` is the
    // default vhost `/`.
    let url = format!(
        "amqp://{BROKER_USER}:{}@{}:{}/%2f",
        values.broker_password,
        ctx.service_host(Component::Broker),
        broker.port
    );
    secret(
        ctx,
        Component::Broker,
        broker_secret_name(&ctx.name),
        [
            (USERNAME_KEY, BROKER_USER.to_owned()),
            (PASSWORD_KEY, values.broker_password.clone()),
            (AMQP_URL_KEY, url),
        ],
    )
}

/// Root credentials of the managed MongoDB and the connection string of its only member.
pub fn mongodb_credentials(ctx: &RenderContext, values: &SecretValues) -> Secret {
    let uri = format!(
        "mongodb://{MONGODB_USER}:{}@{}:{}/?authSource=admin",
        values.mongodb_password,
        ctx.service_host(Component::MongoDb),
        contract::MONGODB_PORT
    );
    secret(
        ctx,
        Component::MongoDb,
        mongodb_secret_name(&ctx.name),
        [
            (USERNAME_KEY, MONGODB_USER.to_owned()),
            (PASSWORD_KEY, values.mongodb_password.clone()),
            (MONGODB_URI_KEY, uri),
        ],
    )
}

/// A tokens file with one bearer token for the REST API.
pub fn api_tokens(ctx: &RenderContext, values: &SecretValues) -> Secret {
    let tokens = telemetry_core::api_tokens::format_line(GENERATED_TOKEN_NAME, &values.api_token);
    secret(
        ctx,
        Component::Metrics,
        api_tokens_secret_name(&ctx.name),
        [(API_TOKENS_KEY, tokens)],
    )
}

fn secret<const N: usize>(
    ctx: &RenderContext,
    component: Component,
    name: String,
    data: [(&str, String); N],
) -> Secret {
    Secret {
        metadata: ctx.metadata(component, name),
        type_: Some("Opaque".to_owned()),
        string_data: Some(
            data.into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}
