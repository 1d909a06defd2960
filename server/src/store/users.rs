//! Atomic writes of users and tokens: a user, its name index entry and its first token are
//! created together or not at all.

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::{encode, id_key, Store, StoreError, TokenRecord, UserRecord};

/// What [`Store::insert_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserInsert {
    Created,
    /// A user of that name exists already, with this id.
    NameTaken(u64),
}

impl Store {
    pub fn user(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        self.users.get(&id_key(id))
    }

    /// Replaces a user's record (its name is never changed, so the name index stays).
    pub fn put_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.users.put(&id_key(user.id), user)
    }

    /// Users in id order from `start_id`.
    pub fn users_from(&self, start_id: u64) -> impl Iterator<Item = Result<UserRecord, StoreError>> + '_ {
        self.users.scan_from::<UserRecord>(&id_key(start_id)).map(|item| Ok(item?.1))
    }

    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    pub fn user_id_by_name(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.user_names.get_id(name.as_bytes())
    }

    pub fn token(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens.get(&id_key(id))
    }

    /// Replaces a token's record (revocation, expiry); its hash never changes.
    pub fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.tokens.put(&id_key(token.id), token)
    }

    /// The token whose secret hashes to `sha256`.
    pub fn token_id_by_hash(&self, sha256: &[u8]) -> Result<Option<u64>, StoreError> {
        self.token_hashes.get_id(sha256)
    }

    /// Every token, in id order.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.tokens.scan_from::<TokenRecord>(&id_key(0)).map(|item| Ok(item?.1)).collect()
    }

    /// Creates a user with its first token, unless the name is taken.
    pub fn insert_user(&self, user: &UserRecord, token: &TokenRecord) -> Result<UserInsert, StoreError> {
        let trees = [
            self.users.tree.clone(),
            self.user_names.tree.clone(),
            self.tokens.tree.clone(),
            self.token_hashes.tree.clone(),
        ];
        let result = trees.as_slice().transaction(|tx: &Vec<TransactionalTree>| {
            let [users, names, tokens, hashes] = &tx[..] else { unreachable!("four trees were given") };
            if let Some(existing) = names.get(user.name.as_bytes())? {
                let id = super::decode_id("user_names", &existing).unwrap_or(0);
                return Err(ConflictableTransactionError::Abort(id));
            }
            users.insert(&id_key(user.id), encode(user))?;
            names.insert(user.name.as_bytes(), &id_key(user.id))?;
            tokens.insert(&id_key(token.id), encode(token))?;
            hashes.insert(token.sha256.as_slice(), &id_key(token.id))?;
            Ok(())
        });
        match result {
            Ok(()) => Ok(UserInsert::Created),
            Err(TransactionError::Abort(id)) => Ok(UserInsert::NameTaken(id)),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// Stores a further token of an existing user.
    pub fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let trees = [self.tokens.tree.clone(), self.token_hashes.tree.clone()];
        let result = trees.as_slice().transaction(|tx: &Vec<TransactionalTree>| {
            let [tokens, hashes] = &tx[..] else { unreachable!("two trees were given") };
            tokens.insert(&id_key(token.id), encode(token))?;
            hashes.insert(token.sha256.as_slice(), &id_key(token.id))?;
            Ok::<_, ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => unreachable!("the transaction never aborts"),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }
}
