//! Who may call what: users, roles, bearer tokens (kept only as SHA-256 hashes) and the table
//! that names the roles allowed on every RPC. Knows nothing about tonic: the api layer asks it.

mod limiter;
mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

pub use limiter::FailureLimiter;
pub use policy::{allowed_roles, RPC_POLICY};

use crate::store::{now_millis, Store, StoreError, TokenRecord, UserInsert, UserRecord};

/// A user's role. The numbers match the API's `Role` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin = 1,
    Researcher = 2,
    Annotator = 3,
    Service = 4,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Researcher, Role::Annotator, Role::Service];

    pub fn from_number(n: i32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| *r as i32 == n)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Researcher => "researcher",
            Role::Annotator => "annotator",
            Role::Service => "service",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: u64,
    pub user_name: String,
    pub role: Role,
    pub token_id: u64,
}

/// Errors of authentication and user administration.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send the header `authorization: Bearer <token>`")]
    MissingToken,
    #[error("the token is not valid: it is unknown, revoked, expired or its user is disabled")]
    InvalidToken,
    #[error("too many failed authentications from {addr}; try again in {retry_after_seconds} s")]
    TooManyFailures { addr: std::net::IpAddr, retry_after_seconds: u64 },
    #[error("role `{role}` may not call {method}; allowed roles: {allowed}")]
    Forbidden { role: Role, method: String, allowed: String },
    #[error("invalid user name {0:?}: use 1-64 letters, digits, '.', '_', '-' or '@'")]
    InvalidUserName(String),
    #[error("a role must be given (admin, researcher, annotator or service)")]
    MissingRole,
    #[error("a user named {0:?} already exists")]
    UserExists(String),
    #[error("no user with id {0}")]
    UserNotFound(u64),
    #[error("no token with id {0}")]
    TokenNotFound(u64),
    #[error("the admin token given in FACESIM_ADMIN_TOKEN must be at least {MIN_TOKEN_LEN} characters")]
    AdminTokenTooShort,
    #[error("token lifetime {0} s is too long (at most {MAX_TTL_SECONDS} s)")]
    TtlTooLong(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shortest admin token accepted from the environment.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token lifetime: ten years.
pub const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// Name of the user created on first start.
pub const ADMIN_USER: &str = "admin";

/// A freshly issued token: the record kept and the secret shown once.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub record: TokenRecord,
    pub secret: String,
}

/// User and token administration plus request authentication over the store.
#[derive(Clone)]
pub struct Auth {
    store: Store,
    /// Tokens checked before, by hash: every call carries one, and reading it, its record and its
    /// user from the store each time costs more than the rest of a small call's checks.
    known: Arc<Mutex<KnownTokens>>,
}

/// Most tokens kept in [`KnownTokens`]; it starts over when full.
const KNOWN_TOKENS: usize = 10_000;

#[derive(Default)]
struct KnownTokens {
    /// Bumped by every change that can end a token's validity (revocation, disabling a user);
    /// a check that read the store under an older generation does not fill the cache.
    generation: u64,
    /// `sha256(token)` → (who holds it, when it expires in ms since the epoch, 0 = never).
    tokens: HashMap<[u8; 32], (Principal, i64)>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

impl Auth {
    pub fn new(store: Store) -> Self {
        Auth { store, known: Arc::default() }
    }

    /// Checks a bearer token and returns who holds it.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let hash = sha256(token.as_bytes());
        let generation = {
            let known = self.known.lock().expect("not poisoned");
            if let Some((principal, expire_millis)) = known.tokens.get(&hash) {
                if *expire_millis == 0 || *expire_millis > now_millis() {
                    return Ok(principal.clone());
                }
            }
            known.generation
        };
        let (principal, expire_millis) = self.authenticate_in_store(&hash)?;
        let mut known = self.known.lock().expect("not poisoned");
        if known.generation == generation {
            if known.tokens.len() >= KNOWN_TOKENS {
                known.tokens.clear();
            }
            known.tokens.insert(hash, (principal.clone(), expire_millis));
        }
        Ok(principal)
    }

    /// Forgets every checked token; called after each change that can end a token's validity,
    /// once the change is in the store.
    fn forget_known_tokens(&self) {
        let mut known = self.known.lock().expect("not poisoned");
        known.generation += 1;
        known.tokens.clear();
    }

    fn authenticate_in_store(&self, hash: &[u8; 32]) -> Result<(Principal, i64), AuthError> {
        let token_id = self.store.token_id_by_hash(hash)?.ok_or(AuthError::InvalidToken)?;
        let record: TokenRecord = self.store.token(token_id)?.ok_or(AuthError::InvalidToken)?;
        if record.revoked || (record.expire_millis != 0 && record.expire_millis <= now_millis()) {
            return Err(AuthError::InvalidToken);
        }
        let user: UserRecord = self.store.user(record.user_id)?.ok_or(AuthError::InvalidToken)?;
        if user.disabled {
            return Err(AuthError::InvalidToken);
        }
        let role = Role::from_number(user.role).ok_or(AuthError::InvalidToken)?;
        Ok((Principal { user_id: user.id, user_name: user.name, role, token_id }, record.expire_millis))
    }

    /// Checks that `principal` may call `method` (a full gRPC path such as
    /// `/facesim.v1.AdminService/CreateUser`).
    pub fn authorize(&self, principal: &Principal, method: &str, allowed: &[Role]) -> Result<(), AuthError> {
        if allowed.contains(&principal.role) {
            return Ok(());
        }
        Err(AuthError::Forbidden {
            role: principal.role,
            method: method.trim_start_matches('/').to_string(),
            allowed: allowed.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Makes sure an admin exists. On a store without users it creates the `admin` user; its token
    /// is `env_token` when given, otherwise a new random one, returned so it can be shown once.
    /// When `env_token` is given and unknown, it is added as a token of the admin user, so that a
    /// deployment can always reach the server with the token it was configured with.
    pub fn bootstrap_admin(&self, env_token: Option<&str>) -> Result<Option<String>, AuthError> {
        if let Some(token) = env_token {
            if token.len() < MIN_TOKEN_LEN {
                return Err(AuthError::AdminTokenTooShort);
            }
        }
        let admin_id = self.store.user_id_by_name(ADMIN_USER)?;
        match (admin_id, env_token) {
            (None, _) if self.store.has_users() && env_token.is_none() => Ok(None),
            (None, token) => {
                let secret = token.map(str::to_string).unwrap_or_else(new_secret);
                self.create_user_with_secret(ADMIN_USER, Role::Admin, "bootstrap admin token", 0, secret.clone())?;
                Ok(if token.is_some() { None } else { Some(secret) })
            }
            (Some(admin_id), Some(token)) => {
                if self.store.token_id_by_hash(&sha256(token.as_bytes()))?.is_none() {
                    self.issue_token_with_secret(admin_id, "FACESIM_ADMIN_TOKEN", 0, token.to_string())?;
                }
                Ok(None)
            }
            (Some(_), None) => Ok(None),
        }
    }

    /// Creates a user with a first token.
    pub fn create_user(
        &self,
        name: &str,
        role: Role,
        ttl_seconds: u64,
    ) -> Result<(UserRecord, IssuedToken), AuthError> {
        self.create_user_with_secret(name, role, "first token", ttl_seconds, new_secret())
    }

    fn create_user_with_secret(
        &self,
        name: &str,
        role: Role,
        description: &str,
        ttl_seconds: u64,
        secret: String,
    ) -> Result<(UserRecord, IssuedToken), AuthError> {
        if !valid_user_name(name) {
            return Err(AuthError::InvalidUserName(name.to_string()));
        }
        let user = UserRecord {
            id: self.store.next_id("users")?,
            name: name.to_string(),
            role: role as i32,
            disabled: false,
            create_millis: now_millis(),
        };
        let token = self.token_record(user.id, description, ttl_seconds, &secret)?;
        match self.store.insert_user(&user, &token)? {
            UserInsert::Created => Ok((user, IssuedToken { record: token, secret })),
            UserInsert::NameTaken(_) => Err(AuthError::UserExists(name.to_string())),
        }
    }

    /// Issues a further token for an existing user.
    pub fn issue_token(&self, user_id: u64, description: &str, ttl_seconds: u64) -> Result<IssuedToken, AuthError> {
        self.issue_token_with_secret(user_id, description, ttl_seconds, new_secret())
    }

    fn issue_token_with_secret(
        &self,
        user_id: u64,
        description: &str,
        ttl_seconds: u64,
        secret: String,
    ) -> Result<IssuedToken, AuthError> {
        self.user(user_id)?;
        let record = self.token_record(user_id, description, ttl_seconds, &secret)?;
        self.store.insert_token(&record)?;
        Ok(IssuedToken { record, secret })
    }

    fn token_record(
        &self,
        user_id: u64,
        description: &str,
        ttl_seconds: u64,
        secret: &str,
    ) -> Result<TokenRecord, AuthError> {
        if ttl_seconds > MAX_TTL_SECONDS {
            return Err(AuthError::TtlTooLong(ttl_seconds));
        }
        let now = now_millis();
        Ok(TokenRecord {
            id: self.store.next_id("tokens")?,
            user_id,
            sha256: sha256(secret.as_bytes()).to_vec(),
            description: description.chars().take(200).collect(),
            create_millis: now,
            expire_millis: if ttl_seconds == 0 { 0 } else { now + (ttl_seconds as i64) * 1000 },
            revoked: false,
            prefix: secret.chars().take(8).collect(),
        })
    }

    pub fn user(&self, user_id: u64) -> Result<UserRecord, AuthError> {
        self.store.user(user_id)?.ok_or(AuthError::UserNotFound(user_id))
    }

    /// Users in id order from `start_id`, at most `limit`.
    pub fn users_from(&self, start_id: u64, limit: usize) -> Result<Vec<UserRecord>, AuthError> {
        Ok(self.store.users_from(start_id).take(limit).collect::<Result<_, _>>()?)
    }

    pub fn set_user_disabled(&self, user_id: u64, disabled: bool) -> Result<UserRecord, AuthError> {
        let mut user = self.user(user_id)?;
        user.disabled = disabled;
        self.store.put_user(&user)?;
        self.forget_known_tokens();
        Ok(user)
    }

    pub fn tokens_of(&self, user_id: u64) -> Result<Vec<TokenRecord>, AuthError> {
        self.user(user_id)?;
        Ok(self.store.tokens()?.into_iter().filter(|t| t.user_id == user_id).collect())
    }

    pub fn revoke_token(&self, token_id: u64) -> Result<TokenRecord, AuthError> {
        let mut token: TokenRecord = self.store.token(token_id)?.ok_or(AuthError::TokenNotFound(token_id))?;
        token.revoked = true;
        self.store.put_token(&token)?;
        self.forget_known_tokens();
        Ok(token)
    }
}

/// A new random token: `fsm_` and 32 random bytes in URL-safe base64 (256 bits of entropy, so a
/// plain SHA-256 hash is a safe way to store it).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("fsm_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, Auth::new(store))
    }

    #[test]
    fn bootstrap_creates_one_admin_and_shows_token_once() {
        let (_dir, auth) = auth();
        let token = auth.bootstrap_admin(None).unwrap().expect("first start shows a token");
        assert!(token.starts_with("fsm_") && token.len() > 40);
        let who = auth.authenticate(&token).unwrap();
        assert_eq!((who.user_name.as_str(), who.role), (ADMIN_USER, Role::Admin));
        assert_eq!(auth.bootstrap_admin(None).unwrap(), None, "second start shows nothing");
        // Only the hash is stored: the secret appears nowhere in the token record.
        let record = &auth.tokens_of(who.user_id).unwrap()[0];
        assert_ne!(record.sha256, token.as_bytes());
        assert_eq!(record.sha256.len(), 32);
    }

    #[test]
    fn env_admin_token_works_and_is_added_later_too() {
        let (_dir, auth) = auth();
        assert_eq!(auth.bootstrap_admin(Some("0123456789abcdef-first")).unwrap(), None);
        assert_eq!(auth.authenticate("0123456789abcdef-first").unwrap().role, Role::Admin);
        auth.bootstrap_admin(Some("0123456789abcdef-second")).unwrap();
        assert_eq!(auth.authenticate("0123456789abcdef-second").unwrap().role, Role::Admin);
        assert!(matches!(auth.bootstrap_admin(Some("short")), Err(AuthError::AdminTokenTooShort)));
    }

    #[test]
    fn revoked_expired_and_disabled_tokens_fail() {
        let (_dir, auth) = auth();
        let (user, first) = auth.create_user("ann", Role::Annotator, 0).unwrap();
        let second = auth.issue_token(user.id, "laptop", 0).unwrap();
        assert_eq!(auth.authenticate(&first.secret).unwrap().user_id, user.id);
        auth.revoke_token(first.record.id).unwrap();
        assert!(matches!(auth.authenticate(&first.secret), Err(AuthError::InvalidToken)));
        assert!(auth.authenticate(&second.secret).is_ok(), "other tokens keep working");
        auth.set_user_disabled(user.id, true).unwrap();
        assert!(matches!(auth.authenticate(&second.secret), Err(AuthError::InvalidToken)));

        let (_, short) = auth.create_user("svc", Role::Service, 1).unwrap();
        let mut record = short.record.clone();
        record.expire_millis = now_millis() - 1;
        auth.store.put_token(&record).unwrap();
        assert!(matches!(auth.authenticate(&short.secret), Err(AuthError::InvalidToken)));
        assert!(matches!(auth.authenticate("fsm_nonsense"), Err(AuthError::InvalidToken)));
        auth.set_user_disabled(user.id, false).unwrap();
        assert!(auth.authenticate(&second.secret).is_ok(), "enabled again");
    }

    #[test]
    fn a_checked_token_still_expires() {
        let (_dir, auth) = auth();
        let (_, token) = auth.create_user("brief", Role::Service, 1).unwrap();
        assert!(auth.authenticate(&token.secret).is_ok());
        assert!(auth.authenticate(&token.secret).is_ok(), "answered from the known tokens");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(matches!(auth.authenticate(&token.secret), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn user_names_are_validated_and_unique() {
        let (_dir, auth) = auth();
        auth.create_user("r.one", Role::Researcher, 0).unwrap();
        assert!(matches!(auth.create_user("r.one", Role::Annotator, 0), Err(AuthError::UserExists(_))));
        for bad in ["", "../x", "a b", "x".repeat(65).as_str()] {
            assert!(matches!(auth.create_user(bad, Role::Annotator, 0), Err(AuthError::InvalidUserName(_))), "{bad:?}");
        }
    }
}
