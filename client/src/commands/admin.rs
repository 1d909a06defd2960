//! `facesim admin ...` and `facesim whoami`.

use clap::{Subcommand, ValueEnum};
use facesim_client::{pb, Client, ClientError};

use super::{paginate, role_name, time};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Researcher,
    Annotator,
    Service,
}

impl From<RoleArg> for pb::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => pb::Role::Admin,
            RoleArg::Researcher => pb::Role::Researcher,
            RoleArg::Annotator => pb::Role::Annotator,
            RoleArg::Service => pb::Role::Service,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user and print its first token (shown only once).
    CreateUser {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Token lifetime in seconds (0 = no expiry).
        #[arg(long, default_value_t = 0)]
        ttl: u64,
    },
    /// List users.
    ListUsers,
    /// Disable a user: its tokens stop working at once.
    DisableUser { user_id: u64 },
    /// Enable a disabled user again.
    EnableUser { user_id: u64 },
    /// Issue another token for a user (shown only once).
    CreateToken {
        user_id: u64,
        #[arg(long, default_value = "")]
        description: String,
        /// Token lifetime in seconds (0 = no expiry).
        #[arg(long, default_value_t = 0)]
        ttl: u64,
    },
    /// List a user's tokens (never the secrets).
    ListTokens { user_id: u64 },
    /// Revoke a token.
    RevokeToken { token_id: u64 },
}

pub async fn run(client: &Client, command: AdminCommand) -> anyhow::Result<()> {
    let mut admin = client.admin();
    match command {
        AdminCommand::CreateUser { name, role, ttl } => {
            let response = admin
                .create_user(pb::CreateUserRequest { name, role: pb::Role::from(role) as i32, token_ttl_seconds: ttl })
                .await
                .map_err(ClientError::from)?
                .into_inner();
            let user = response.user.unwrap_or_default();
            eprintln!(
                "created user {} (id {}, role {}); its token, shown only now:",
                user.name,
                user.id,
                role_name(user.role)
            );
            println!("{}", response.token);
        }
        AdminCommand::ListUsers => {
            println!("{:>6}  {:<24} {:<11} {:<9} created (UTC)", "id", "name", "role", "state");
            paginate(String::new(), true, |page_token| {
                let mut admin = client.admin();
                async move {
                    let page =
                        admin.list_users(pb::ListUsersRequest { page_size: 200, page_token }).await?.into_inner();
                    for u in &page.users {
                        let state = if u.disabled { "disabled" } else { "active" };
                        let created = time(&u.create_time);
                        println!("{:>6}  {:<24} {:<11} {:<9} {created}", u.id, u.name, role_name(u.role), state);
                    }
                    Ok(page.next_page_token)
                }
            })
            .await?;
        }
        AdminCommand::DisableUser { user_id } | AdminCommand::EnableUser { user_id } => {
            let disabled = matches!(command, AdminCommand::DisableUser { .. });
            let user = admin
                .set_user_disabled(pb::SetUserDisabledRequest { user_id, disabled })
                .await
                .map_err(ClientError::from)?
                .into_inner();
            println!("user {} is now {}", user.name, if user.disabled { "disabled" } else { "enabled" });
        }
        AdminCommand::CreateToken { user_id, description, ttl } => {
            let response = admin
                .create_token(pb::CreateTokenRequest { user_id, description, ttl_seconds: ttl })
                .await
                .map_err(ClientError::from)?
                .into_inner();
            eprintln!("token {} for user {user_id}, shown only now:", response.token_info.unwrap_or_default().id);
            println!("{}", response.token);
        }
        AdminCommand::ListTokens { user_id } => {
            let tokens = admin
                .list_tokens(pb::ListTokensRequest { user_id })
                .await
                .map_err(ClientError::from)?
                .into_inner()
                .tokens;
            println!(
                "{:>6}  {:<12} {:<8} {:<19}  {:<19}  description",
                "id", "prefix", "state", "created (UTC)", "expires (UTC)"
            );
            for t in tokens {
                let state = if t.revoked { "revoked" } else { "active" };
                println!(
                    "{:>6}  {:<12} {:<8} {:<19}  {:<19}  {}",
                    t.id,
                    format!("{}…", t.prefix),
                    state,
                    time(&t.create_time),
                    time(&t.expire_time),
                    t.description
                );
            }
        }
        AdminCommand::RevokeToken { token_id } => {
            admin.revoke_token(pb::RevokeTokenRequest { token_id }).await.map_err(ClientError::from)?;
            println!("token {token_id} revoked");
        }
    }
    Ok(())
}

pub async fn whoami(client: &Client) -> anyhow::Result<()> {
    let me = client.admin().who_am_i(pb::WhoAmIRequest {}).await.map_err(ClientError::from)?.into_inner();
    let user = me.user.unwrap_or_default();
    println!("{} (user {}, role {}, token {})", user.name, user.id, role_name(user.role), me.token_id);
    Ok(())
}
