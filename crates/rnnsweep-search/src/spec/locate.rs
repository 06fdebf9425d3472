//! Where a key sits in the spec's text, so that an error can name `file:line:column` even
//! for a value serde accepted and a later check refused.

/// Finds the line and column of a key path in block-style YAML (best effort; flow-style
/// mappings are searched within their parent's line).
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    let mut parent_indent: Option<usize> = None;
    let mut found: Option<(usize, usize)> = None;
    for key in path {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(p) = parent_indent {
                if i > start && indent <= p {
                    break;
                }
            }
            let bare = trimmed.trim_start_matches("- ");
            if bare.starts_with(&format!("{key}:")) || bare.starts_with(&format!("\"{key}\":")) {
                hit = Some((i, indent + (trimmed.len() - bare.len())));
                break;
            }
            // Flow style on the parent's line: `lr: {min: 1, max: 0}`.
            if i == start && found.is_some() {
                if let Some(col) = line.find(&format!("{key}:")) {
                    hit = Some((i, col));
                    break;
                }
            }
        }
        let (line, col) = match hit {
            Some(h) => h,
            None => return found.map(|(l, c)| (l + 1, c + 1)),
        };
        found = Some((line, col));
        parent_indent = Some(col);
        start = line;
        if lines[line].trim_end().ends_with(':') {
            start = line + 1;
        }
    }
    found.map(|(l, c)| (l + 1, c + 1))
}

/// Where the `index`-th item of the block list under top-level `key` starts (the key's own
/// position for a flow-style list, where every item shares its line).
pub fn locate_item(text: &str, key: &str, index: usize) -> Option<(usize, usize)> {
    let (key_line, _) = locate(text, &[key])?;
    let mut item_column = None;
    let mut seen = 0;
    for (i, line) in text.lines().enumerate().skip(key_line) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        // A top-level key ends the list; a dash deeper than the first item's is inside one.
        if indent == 0 && !trimmed.starts_with('-') {
            break;
        }
        if !trimmed.starts_with("- ") || item_column.is_some_and(|c| c != indent) {
            continue;
        }
        item_column = Some(indent);
        if seen == index {
            return Some((i + 1, indent + 1));
        }
        seen += 1;
    }
    locate(text, &[key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_nested_keys_and_flow_style() {
        let text = "a:\n  b:\n    c: 1\n  d: {min: 1, max: 0}\n";
        assert_eq!(locate(text, &["a", "b", "c"]), Some((3, 5)));
        assert_eq!(locate(text, &["a", "d", "max"]), Some((4, 15)));
        assert_eq!(locate(text, &["a", "zz"]), Some((1, 1)));
    }

    #[test]
    fn locate_item_finds_the_nth_entry_of_a_block_list() {
        let text = "a: 1\nq:\n  - {x: 1}\n  - x: 2\n    y:\n      - 5\n  - {x: 3}\nz: 2\n";
        assert_eq!(locate_item(text, "q", 0), Some((3, 3)));
        assert_eq!(locate_item(text, "q", 1), Some((4, 3)));
        assert_eq!(locate_item(text, "q", 2), Some((7, 3)));
        // Past the end, and a flow-style list: the key itself.
        assert_eq!(locate_item(text, "q", 3), Some((2, 1)));
        assert_eq!(locate_item("q: [{x: 1}, {x: 2}]\n", "q", 1), Some((1, 1)));
    }
}
