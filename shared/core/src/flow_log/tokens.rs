//! Tokenizing: splits a line at runs of spaces, eight bytes at a time, for the reference
//! parser's general path.

use crate::scan::{bytes_equal, gather_high_bits};

/// Splits `bytes` at runs of spaces: writes the (start, end) of the first tokens into
/// `tokens` and returns the number of tokens in all.
///
/// Reads eight bytes at a time and finds the spaces among them with a few arithmetic
/// operations (SWAR), so the cost is per word and per token, never a branch per byte.
#[inline]
pub(super) fn tokenize(bytes: &[u8], tokens: &mut [(u32, u32)]) -> usize {
    let mut starts_found = 0;
    let mut ends_found = 0;
    let mut after_letter = 0u32;
    let mut offset = 0;
    while offset < bytes.len() {
        let word = match bytes.get(offset..offset + 8) {
            Some(word) => u64::from_le_bytes(word.try_into().unwrap_or([b' '; 8])),
            None => {
                // Past the end counts as space, which also closes the last token.
                let mut word = [b' '; 8];
                word[..bytes.len() - offset].copy_from_slice(&bytes[offset..]);
                u64::from_le_bytes(word)
            }
        };
        let spaces = space_bits(word);
        let letters = !spaces & 0xff;
        let previous = (letters << 1 | after_letter) & 0xff;
        let mut starts = letters & !previous;
        let mut ends = spaces & previous;
        while starts != 0 {
            if let Some(token) = tokens.get_mut(starts_found) {
                token.0 = offset as u32 + starts.trailing_zeros();
            }
            starts_found += 1;
            starts &= starts - 1;
        }
        while ends != 0 {
            if let Some(token) = tokens.get_mut(ends_found) {
                token.1 = offset as u32 + ends.trailing_zeros();
            }
            ends_found += 1;
            ends &= ends - 1;
        }
        after_letter = letters >> 7;
        offset += 8;
    }
    if ends_found < starts_found
        && let Some(token) = tokens.get_mut(ends_found)
    {
        token.1 = bytes.len() as u32;
    }
    starts_found
}

/// Bit `i` is set when byte `i` of the little-endian word is a space.
#[inline]
fn space_bits(word: u64) -> u32 {
    gather_high_bits(bytes_equal(word, b' ')) as u32
}

pub(super) fn token_end(bytes: &[u8], mut position: usize) -> usize {
    while position < bytes.len() && bytes[position] != b' ' {
        position += 1;
    }
    position
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tokens_of(text: &str) -> Vec<&str> {
        let mut tokens = vec![(0, 0); 64];
        let found = tokenize(text.as_bytes(), &mut tokens);
        tokens[..found.min(64)]
            .iter()
            .map(|&(start, end)| &text[start as usize..end as usize])
            .collect()
    }

    #[test]
    fn splits_at_runs_of_spaces_across_word_boundaries() {
        assert_eq!(tokens_of(""), Vec::<&str>::new());
        assert_eq!(tokens_of("        "), Vec::<&str>::new());
        assert_eq!(tokens_of("a"), vec!["a"]);
        assert_eq!(tokens_of("abcdefgh"), vec!["abcdefgh"]);
        assert_eq!(tokens_of("abcdefg h"), vec!["abcdefg", "h"]);
        assert_eq!(tokens_of("  1234567  89  "), vec!["1234567", "89"]);
    }

    proptest! {
        #[test]
        fn agrees_with_splitting_on_spaces(text in "[ a-z0-9\\t.:-]{0,100}") {
            let expected: Vec<&str> = text.split(' ').filter(|token| !token.is_empty()).collect();
            prop_assert_eq!(tokens_of(&text), expected);
        }

        #[test]
        fn counts_every_token_even_beyond_the_buffer(words in 0usize..40) {
            let text = vec!["x"; words].join("  ");
            let mut tokens = vec![(0, 0); 3];
            prop_assert_eq!(tokenize(text.as_bytes(), &mut tokens), words);
        }
    }
}
