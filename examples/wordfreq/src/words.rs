//! Splitting text into words.

use std::collections::BTreeMap;

/// Adds the words of `text` to `counts`; returns how many words `text` held.
///
/// A word is a maximal run of alphanumeric characters (`char::is_alphanumeric`, so any
/// script), plus apostrophes that sit between two of them ("don't", "o'clock"), lowercased.
/// Everything else separates words.
pub fn count_words(text: &str, counts: &mut BTreeMap<String, i64>) -> i64 {
    let mut found = 0;
    for word in words(text) {
        *counts.entry(word).or_insert(0) += 1;
        found += 1;
    }
    found
}

/// The words of `text`, lowercased, in order.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut chars = text.chars().peekable();
    std::iter::from_fn(move || {
        // Skip to the start of the next word.
        while chars.next_if(|c| !c.is_alphanumeric()).is_some() {}
        let mut word = String::new();
        while let Some(c) = chars.next() {
            if c.is_alphanumeric() {
                word.extend(c.to_lowercase());
            } else if c == '\'' && chars.peek().is_some_and(|next| next.is_alphanumeric()) {
                word.push(c);
            } else {
                break;
            }
        }
        (!word.is_empty()).then_some(word)
    })
}

/// `word` lowercased the way [`words`] lowercases (character by character).
pub fn normalize(word: &str) -> String {
    word.chars().flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        words(text).collect()
    }

    #[test]
    fn splits_on_anything_but_letters_and_digits() {
        assert_eq!(
            split("The quick, brown fox!"),
            ["the", "quick", "brown", "fox"]
        );
        assert_eq!(
            split("  a-b\tc\nd_e 42x  "),
            ["a", "b", "c", "d", "e", "42x"]
        );
        assert_eq!(split(""), Vec::<String>::new());
        assert_eq!(split(" ,.;- "), Vec::<String>::new());
    }

    #[test]
    fn keeps_apostrophes_inside_words_only() {
        assert_eq!(split("Don't 'quote' me"), ["don't", "quote", "me"]);
        assert_eq!(split("rock'n'roll o''clock"), ["rock'n'roll", "o", "clock"]);
        assert_eq!(split("'' ' dogs'"), ["dogs"]);
    }

    #[test]
    fn handles_unicode() {
        assert_eq!(split("Grüße, ΣΟΦΙΑ! 東京"), ["grüße", "σοφια", "東京"]);
        // Lowercasing may change the length: 'İ' becomes "i̇".
        assert_eq!(split("İx"), ["i\u{307}x"]);
    }

    #[test]
    fn normalizes_like_the_splitter() {
        for word in ["Fox", "ΣΟΦΙΑΣ", "İx", "don't"] {
            assert_eq!(split(word), [normalize(word)]);
        }
    }

    #[test]
    fn counts_repeated_words() {
        let mut counts = BTreeMap::new();
        assert_eq!(count_words("a b A", &mut counts), 3);
        assert_eq!(count_words("b c", &mut counts), 2);
        let counts: Vec<_> = counts.into_iter().collect();
        assert_eq!(counts, [("a".into(), 2), ("b".into(), 2), ("c".into(), 1)]);
    }
}
