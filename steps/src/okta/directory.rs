//! The offline Okta directory: a YAML file of users and groups, for running playbooks
//! without an Okta org (demos, tests, air-gapped labs).
//!
//! ```yaml
//! groups:
//!   - { id: 00g1, name: Executives }
//! users:
//!   - { id: 00u1, login: ceo@example.com, groups: [00g1] }   # group ids or names
//! ```

use std::path::{Path, PathBuf};

use engine::StepError;
use serde::Deserialize;

use super::Group;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    #[serde(default)]
    pub users: Vec<DirectoryUser>,
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(skip)]
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
pub struct DirectoryUser {
    pub id: String,
    #[serde(default)]
    pub login: Option<String>,
    /// Group ids or names, each listed under `groups`.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Directory {
    /// Read and parse the file; a missing or broken file is a permanent error naming it.
    pub async fn load(path: &Path) -> Result<Self, StepError> {
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            StepError::permanent(format!(
                "okta directory `{}` could not be read: {e} (set `okta.url` to use the Okta API, or `okta.directory`)",
                path.display()
            ))
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, StepError> {
        let mut dir: Directory = if text.trim().is_empty() {
            Directory::default()
        } else {
            engine::load::yaml::from_str(text).map_err(|e| {
                StepError::permanent(format!(
                    "okta directory `{}` is invalid: {e}",
                    path.display()
                ))
            })?
        };
        dir.path = path.to_path_buf();
        Ok(dir)
    }

    /// A user's groups, by user id or login (case-insensitive). An unknown user has none.
    pub fn user_groups(&self, user: &str) -> Result<Vec<Group>, StepError> {
        let Some(u) = self.users.iter().find(|u| {
            u.id == user
                || u.login
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case(user))
        }) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for r in &u.groups {
            let g = self
                .groups
                .iter()
                .find(|g| &g.id == r)
                .or_else(|| self.groups.iter().find(|g| &g.name == r))
                .ok_or_else(|| {
                    StepError::permanent(format!(
                        "okta directory `{}`: user `{}` is in group `{r}`, which is not listed under `groups`",
                        self.path.display(),
                        u.id
                    ))
                })?;
            out.push(g.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "
groups:
  - { id: 00g1, name: Everyone }
  - { id: 00g2, name: Executives }
users:
  - { id: 00u1, login: ceo@example.com, groups: [00g1, Executives] }
  - { id: 00u2, login: typo@example.com, groups: [Execs] }
";

    #[test]
    fn users_are_found_by_id_or_login_and_groups_by_id_or_name() {
        let d = Directory::parse(DIR, Path::new("d.yaml")).unwrap();
        let by_login = d.user_groups("CEO@example.com").unwrap();
        assert_eq!(by_login, d.user_groups("00u1").unwrap());
        let names: Vec<_> = by_login.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["Everyone", "Executives"]);
        assert!(d.user_groups("nobody@example.com").unwrap().is_empty());
    }

    #[test]
    fn an_unlisted_group_is_named_in_the_error() {
        let d = Directory::parse(DIR, Path::new("d.yaml")).unwrap();
        let e = d.user_groups("00u2").unwrap_err();
        assert!(e.message.contains("group `Execs`"), "{}", e.message);
    }
}
