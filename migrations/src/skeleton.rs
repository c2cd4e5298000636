//! The one definition of when two usernames look the same, shared by the migration that
//! fills `users.username_skeleton` and by the service that writes it on every
//! registration and rename. Changing it needs a new migration that recomputes the column.

use unicode_normalization::UnicodeNormalization;

/// The UTS #39 confusable skeleton of the username, folded for compatibility forms and
/// case: `kelvins`, `Kelvins`, `keIvins` (capital `I`), `ke1vins`, `kеlvins` (Cyrillic
/// `е`) and `ｋelvins` (fullwidth `ｋ`) all have one skeleton. The skeleton is taken before
/// lower-casing (capital `I` looks like `l`, its lower case does not) and again after
/// (lower-case look-alikes).
pub fn username_skeleton(username: &str) -> String {
    let compatible: String = username.nfkc().collect();
    let folded: String = unicode_security::skeleton(&compatible)
        .flat_map(char::to_lowercase)
        .collect();
    unicode_security::skeleton(&folded).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_share_a_skeleton() {
        let original = username_skeleton("kelvins");
        for alike in [
            "Kelvins",
            "k\u{0435}lvins",
            "\u{ff4b}elvins",
            "KELVINS",
            "keIvins",
            "ke1vins",
        ] {
            assert_eq!(username_skeleton(alike), original, "{alike}");
        }
        assert_ne!(username_skeleton("kelvin"), original);
    }
}
