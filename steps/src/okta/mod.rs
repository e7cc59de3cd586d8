//! Okta steps: `okta.user_groups` (VIP check), `okta.suspend_user`, `okta.clear_sessions`.
//!
//! Config `okta:` picks the backend once per step run: with `okta.url` set, the Management
//! API ([`api`], through the guarded client, `SSWS` token from `okta.token`); without it,
//! the offline directory file ([`directory`], `okta.directory`, default
//! `playbooks/data/directory.yaml`), where response actions are only recorded.

pub mod api;
pub mod directory;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::net::{GuardedClient, Secret};

/// The directory file used when `okta.url` is not configured.
pub const DEFAULT_DIRECTORY: &str = "playbooks/data/directory.yaml";

/// Config `okta:`; every key optional.
#[derive(Debug, Default, Deserialize)]
pub struct OktaConfig {
    /// Org URL (`https://example.okta.com`); without it the offline directory is used.
    pub url: Option<String>,
    /// API token, sent as `Authorization: SSWS <token>`.
    pub token: Option<Secret>,
    /// VIP groups: group ids (preferred, stable) or group names.
    #[serde(default)]
    pub vip_groups: Vec<String>,
    /// The offline directory file.
    pub directory: Option<PathBuf>,
    /// The longest wait for a rate-limit reset before failing (retryable); default `60s`.
    pub rate_limit_max_wait: Option<String>,
}

impl OktaConfig {
    pub fn from_config(config: &Value) -> Result<Self, StepError> {
        match config.get("okta") {
            None | Some(Value::Null) => Ok(OktaConfig::default()),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| StepError::permanent(format!("invalid config `okta`: {e}"))),
        }
    }

    fn max_wait(&self) -> Result<Duration, StepError> {
        match &self.rate_limit_max_wait {
            None => Ok(Duration::from_secs(60)),
            Some(s) => humantime::parse_duration(s.trim()).map_err(|e| {
                StepError::permanent(format!(
                    "invalid config `okta.rate_limit_max_wait`: `{s}`: {e}"
                ))
            }),
        }
    }

    fn directory_path(&self) -> PathBuf {
        self.directory
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIRECTORY))
    }
}

/// Config `okta` as the Okta steps read it: the section's shape, the rate-limit wait, and a
/// URL that parses (with a token) when the real API is used.
fn check_config(config: &Value) -> Result<(), String> {
    let c = OktaConfig::from_config(config).map_err(|e| e.to_string())?;
    c.max_wait().map_err(|e| e.to_string())?;
    if let Some(url) = c.url.as_deref().filter(|u| !u.trim().is_empty()) {
        let parsed = url::Url::parse(url.trim())
            .map_err(|e| format!("invalid config `okta.url`: `{url}`: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "invalid config `okta.url`: `{url}` is not an http(s) URL"
            ));
        }
        if c.token.is_none() {
            return Err("config `okta.url` is set but `okta.token` is not (an API token, sent as `SSWS <token>`)".into());
        }
    }
    Ok(())
}

/// Where the steps get their answers.
enum Backend {
    Api(api::OktaApi),
    Directory(PathBuf),
}

fn backend(ctx: &StepContext) -> Result<(Backend, OktaConfig), StepError> {
    let config = OktaConfig::from_config(ctx.config())?;
    let backend = match config.url.as_deref().map(str::trim) {
        None | Some("") => Backend::Directory(config.directory_path()),
        Some(url) => {
            let token = config
                .token
                .clone()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    StepError::permanent("config `okta.token` is required when `okta.url` is set")
                })?;
            let http = GuardedClient::for_context(ctx)?;
            Backend::Api(api::OktaApi::new(url, token, http, config.max_wait()?)?)
        }
    };
    Ok((backend, config))
}

fn check_user(user: &str) -> Result<&str, StepError> {
    let u = user.trim();
    if u.is_empty() || u == "." || u == ".." {
        return Err(StepError::invalid_input(format!(
            "invalid input `user`: `{user}` is not an Okta user id or login"
        )));
    }
    Ok(u)
}

/// A group as the steps report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// Okta user id (`00u...`) or login (`jane@example.com`).
    pub user: String,
}

#[derive(Debug, Serialize)]
pub struct UserGroupsOutput {
    pub user: String,
    pub groups: Vec<Group>,
    /// Whether any group is one of config `okta.vip_groups`.
    pub is_vip: bool,
    /// Names of the user's VIP groups.
    pub vip_groups: Vec<String>,
    /// The answer came from the offline directory, not Okta.
    pub offline: bool,
}

/// VIP groups among `groups`: a configured entry matches a group's id, or else its name
/// (case-insensitively), so ids are preferred but names work.
pub fn vip_matches(groups: &[Group], vip: &[String]) -> Vec<String> {
    groups
        .iter()
        .filter(|g| {
            vip.iter()
                .any(|v| v == &g.id || v.eq_ignore_ascii_case(&g.name))
        })
        .map(|g| g.name.clone())
        .collect()
}

/// `okta.user_groups`.
pub struct UserGroups;

#[async_trait]
impl TypedStep for UserGroups {
    type Input = UserInput;
    type Output = UserGroupsOutput;
    const NAME: &'static str = "okta.user_groups";
    // A GET of the user's groups (or a read of the local directory): asking twice changes
    // nothing in Okta.
    const EFFECT_FREE: bool = true;

    fn description(&self) -> &'static str {
        "A user's Okta groups and whether one of them is a VIP group (config `okta.vip_groups`, by id or name)."
    }

    fn example(&self) -> Value {
        json!({ "user": "{{ event.actor.alternateId }}" })
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        check_config(config)
    }

    async fn run(
        &self,
        input: UserInput,
        ctx: &StepContext,
    ) -> Result<UserGroupsOutput, StepError> {
        let user = check_user(&input.user)?;
        let (backend, config) = backend(ctx)?;
        let (groups, offline) = match backend {
            Backend::Api(api) => (api.user_groups(ctx, user).await?, false),
            Backend::Directory(path) => {
                let dir = directory::Directory::load(&path).await?;
                (dir.user_groups(user)?, true)
            }
        };
        let vip_groups = vip_matches(&groups, &config.vip_groups);
        Ok(UserGroupsOutput {
            user: user.to_string(),
            is_vip: !vip_groups.is_empty(),
            vip_groups,
            groups,
            offline,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ActionOutput {
    pub user: String,
    /// `suspend` or `clear_sessions`.
    pub action: &'static str,
    /// Only recorded: no `okta.url` is configured.
    pub offline: bool,
    /// `suspend`: the user was already suspended (nothing changed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already: bool,
    /// `clear_sessions`: OAuth tokens were revoked too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth_tokens: Option<bool>,
}

/// `okta.suspend_user`.
pub struct SuspendUser;

#[async_trait]
impl TypedStep for SuspendUser {
    type Input = UserInput;
    type Output = ActionOutput;
    const NAME: &'static str = "okta.suspend_user";

    fn description(&self) -> &'static str {
        "Suspend an Okta user (lifecycle suspend); an already suspended user is not an error. Offline: recorded only."
    }

    fn example(&self) -> Value {
        json!({ "user": "{{ event.actor.id }}" })
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        check_config(config)
    }

    async fn run(&self, input: UserInput, ctx: &StepContext) -> Result<ActionOutput, StepError> {
        let user = check_user(&input.user)?;
        let (backend, _) = backend(ctx)?;
        let (offline, already) = match backend {
            Backend::Api(api) => (false, api.suspend(ctx, user).await?),
            Backend::Directory(_) => {
                tracing::info!(%user, "okta offline: suspend recorded, not sent");
                (true, false)
            }
        };
        Ok(ActionOutput {
            user: user.to_string(),
            action: "suspend",
            offline,
            already,
            oauth_tokens: None,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearSessionsInput {
    /// Okta user id (`00u...`) or login.
    pub user: String,
    /// Also revoke the user's OIDC/OAuth access and refresh tokens.
    #[serde(default)]
    pub oauth_tokens: bool,
}

/// `okta.clear_sessions`.
pub struct ClearSessions;

#[async_trait]
impl TypedStep for ClearSessions {
    type Input = ClearSessionsInput;
    type Output = ActionOutput;
    const NAME: &'static str = "okta.clear_sessions";

    fn description(&self) -> &'static str {
        "End all of an Okta user's sessions (optionally revoking OAuth tokens). Offline: recorded only."
    }

    fn example(&self) -> Value {
        json!({ "user": "{{ event.actor.id }}", "oauth_tokens": true })
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        check_config(config)
    }

    async fn run(
        &self,
        input: ClearSessionsInput,
        ctx: &StepContext,
    ) -> Result<ActionOutput, StepError> {
        let user = check_user(&input.user)?;
        let (backend, _) = backend(ctx)?;
        let offline = match backend {
            Backend::Api(api) => {
                api.clear_sessions(ctx, user, input.oauth_tokens).await?;
                false
            }
            Backend::Directory(_) => {
                tracing::info!(%user, "okta offline: clear sessions recorded, not sent");
                true
            }
        };
        Ok(ActionOutput {
            user: user.to_string(),
            action: "clear_sessions",
            offline,
            already: false,
            oauth_tokens: Some(input.oauth_tokens),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(id: &str, name: &str) -> Group {
        Group {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn vip_matches_by_id_or_by_name() {
        let groups = [
            g("00g1", "Everyone"),
            g("00g2", "Executives"),
            g("00g3", "Board"),
        ];
        assert_eq!(vip_matches(&groups, &["00g2".into()]), ["Executives"]);
        assert_eq!(vip_matches(&groups, &["board".into()]), ["Board"]);
        assert!(vip_matches(&groups, &["00g9".into(), "Admins".into()]).is_empty());
    }
}
