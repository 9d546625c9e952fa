//! Prune: what leaves Git, and the budget that stops one sync from deleting too much.

use super::{Inventory, ObjectId};

/// What leaves Git: entries of `last` that the desired set no longer has.
pub fn prune_set(last: &Inventory, desired: &Inventory) -> Vec<ObjectId> {
    last.entries
        .iter()
        .filter(|(k, _)| !desired.entries.contains_key(*k))
        .map(|(_, (id, _))| id.clone())
        .collect()
}

/// The prune budget was exceeded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to prune {count} of {inventory} objects ({percent}%, budget {budget}%): set spec.allowMassDeletion \
     to confirm"
)]
pub struct BudgetExceeded {
    /// Objects that would be deleted.
    pub count: usize,
    /// Size of the last inventory.
    pub inventory: usize,
    /// Their share, in percent.
    pub percent: usize,
    /// The budget, in percent.
    pub budget: usize,
}

/// Refuses to delete more than `budget` (a share of the last inventory) in one sync, unless
/// `allow` is set.
pub fn check_budget(count: usize, inventory: usize, budget: f64, allow: bool) -> Result<(), BudgetExceeded> {
    if allow || count == 0 || inventory == 0 {
        return Ok(());
    }
    let share = count as f64 / inventory as f64;
    if share > budget {
        return Err(BudgetExceeded {
            count,
            inventory,
            percent: (share * 100.0).round() as usize,
            budget: (budget * 100.0).round() as usize,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_prune_set_is_the_difference() {
        let id = |n: &str| ObjectId {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "x".into(),
            name: n.into(),
        };
        let inv = |names: &[&str]| Inventory {
            entries: names
                .iter()
                .map(|n| (id(n).key(), (id(n), String::new())))
                .collect(),
        };
        assert_eq!(
            prune_set(&inv(&["a", "b", "c"]), &inv(&["b"])),
            vec![id("a"), id("c")]
        );
    }

    #[test]
    fn the_prune_budget() {
        assert!(check_budget(5, 10, 0.5, false).is_ok());
        let e = check_budget(6, 10, 0.5, false).unwrap_err();
        assert_eq!((e.percent, e.budget), (60, 50));
        assert_eq!(
            e.to_string(),
            "refusing to prune 6 of 10 objects (60%, budget 50%): set spec.allowMassDeletion to confirm"
        );
        assert!(check_budget(10, 10, 0.5, true).is_ok());
        assert!(check_budget(0, 0, 0.5, false).is_ok());
    }
}
