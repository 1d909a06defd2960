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
