//! Per-session configuration (SPEC §4.2), stored as JSON with the session.

use serde::{Deserialize, Serialize};

/// How eagerly a session escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EscalationPolicy {
    #[default]
    Progressive,
    Immediate,
    Relaxed,
}

/// Who is told what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notifications {
    pub slack: bool,
    pub email: bool,
    pub notify_on_state_change: bool,
    pub notify_on_blocker: bool,
    pub notify_on_escalation: bool,
    pub notify_on_completion: bool,
    pub recipients: Vec<String>,
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            slack: true,
            email: false,
            notify_on_state_change: true,
            notify_on_blocker: true,
            notify_on_escalation: true,
            notify_on_completion: true,
            recipients: Vec::new(),
        }
    }
}

/// A session's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionConfig {
    #[serde(default)]
    pub template_id: String,
    pub max_duration_secs: i64,
    pub check_in_interval_secs: i64,
    pub escalation_policy: EscalationPolicy,
    #[serde(default)]
    pub quality_tier_override: Option<i32>,
    pub notifications: Notifications,
    #[serde(default)]
    pub custom_settings: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub allowed_stages: Vec<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            template_id: String::new(),
            max_duration_secs: 8 * 3600,
            check_in_interval_secs: 30 * 60,
            escalation_policy: EscalationPolicy::Progressive,
            quality_tier_override: None,
            notifications: Notifications::default(),
            custom_settings: serde_json::Map::new(),
            allowed_stages: Vec::new(),
        }
    }
}
