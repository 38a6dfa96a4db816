//! keepalived's configuration syntax read as keepalived 2.2.7 reads it: words and quoted
//! strings, `#` / `!` comments, blocks opened on the same or the next line, `$NAME=value`
//! definitions, `include` with globs; unrendered templates refused with their line.

use std::path::{Path, PathBuf};

use super::{ImportError, Node};

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Open,
    Close,
    Newline,
}

/// Splits one file into tokens: words (quotes kept together, then removed), braces, line ends.
/// `#` and `!` outside quotes start a comment.
fn tokenize(text: &str) -> Vec<(Token, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let mut word = String::new();
        let mut quoted = false;
        let mut in_word = false;
        let flush = |word: &mut String, in_word: &mut bool, out: &mut Vec<(Token, usize)>| {
            if *in_word {
                out.push((Token::Word(std::mem::take(word)), line_no));
                *in_word = false;
            }
        };
        for c in line.chars() {
            if quoted {
                if c == '"' {
                    quoted = false;
                } else {
                    word.push(c);
                }
                continue;
            }
            match c {
                '"' => {
                    quoted = true;
                    in_word = true;
                }
                '#' | '!' if !in_word => break,
                '{' | '}' => {
                    flush(&mut word, &mut in_word, &mut out);
                    out.push((if c == '{' { Token::Open } else { Token::Close }, line_no));
                }
                c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut out),
                c => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        flush(&mut word, &mut in_word, &mut out);
        out.push((Token::Newline, line_no));
    }
    out
}

/// Parses keepalived's configuration syntax, following `include` (globs in the last part of
/// the path: `*` and `?`).
pub fn parse_file(path: &Path) -> Result<Vec<Node>, ImportError> {
    let mut depth = 0;
    parse_included(path, &mut depth)
}

fn parse_included(path: &Path, depth: &mut u32) -> Result<Vec<Node>, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ImportError::Read(path.to_owned(), e))?;
    let nodes = parse_text(&text, &path.display().to_string())?;
    let base = path.parent().unwrap_or(Path::new("."));
    expand_includes(nodes, base, depth)
}

fn expand_includes(
    nodes: Vec<Node>,
    base: &Path,
    depth: &mut u32,
) -> Result<Vec<Node>, ImportError> {
    let mut out = Vec::new();
    for mut node in nodes {
        if node.key() == "include" && node.block.is_none() {
            *depth += 1;
            if *depth > 32 {
                return Err(ImportError::Syntax {
                    at: node.at,
                    message: "includes nested more than 32 deep (a loop?)".into(),
                });
            }
            for pattern in node.words.iter().skip(1) {
                for file in glob(&base.join(pattern)) {
                    out.extend(parse_included(&file, depth)?);
                }
            }
            *depth -= 1;
            continue;
        }
        if let Some(block) = node.block.take() {
            node.block = Some(expand_includes(block, base, depth)?);
        }
        out.push(node);
    }
    Ok(out)
}

/// The files a path with `*` / `?` in its last part names, sorted; the path itself otherwise.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![pattern.to_owned()];
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Whether `name` matches `pattern` (`*`: any run, `?`: any one character). Linear in both
/// lengths for each star (it resumes after the last star, never backtracks further), so a
/// crafted pattern cannot make it run for ever.
pub(super) fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // The last star seen, and where in the name its run ends so far.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    pi = sp + 1;
                    ni = sn + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Parses the text of one file (`file` names it in locations).
pub fn parse_text(text: &str, file: &str) -> Result<Vec<Node>, ImportError> {
    let text = substitute(text, file)?;
    let tokens = tokenize(&text);
    if let Some((word, line)) = tokens.iter().find_map(|(t, line)| match t {
        Token::Word(w) if is_placeholder(w) => Some((w, line)),
        _ => None,
    }) {
        return Err(ImportError::Syntax {
            at: format!("{file}:{line}"),
            message: format!(
                "{word:?} is a template placeholder: render the template (Ansible, Jinja, ...) first"
            ),
        });
    }
    let mut i = 0;
    let (nodes, _) = parse_block(&tokens, &mut i, file, None, 0)?;
    Ok(nodes)
}

/// A word that a template left unrendered: `<name>` or `__NAME__` (a `{{ x }}` is caught by
/// [`substitute`], before the braces are taken for blocks).
fn is_placeholder(word: &str) -> bool {
    let inner_ok = |s: &str, upper: bool| {
        !s.is_empty()
            && s.chars().all(|c| {
                c == '_'
                    || c == '-'
                    || c.is_ascii_digit()
                    || if upper {
                        c.is_ascii_uppercase()
                    } else {
                        c.is_ascii_alphabetic()
                    }
            })
    };
    (word.len() > 2
        && word.starts_with('<')
        && word.ends_with('>')
        && inner_ok(&word[1..word.len() - 1], false))
        || (word.len() > 4
            && word.starts_with("__")
            && word.ends_with("__")
            && inner_ok(&word[2..word.len() - 2], true))
}

/// keepalived's `$NAME=value` definitions, substituted as `$NAME` and `${NAME}` in the lines
/// after them; template syntax (`{{ ... }}`, `{% ... %}`) and unknown names are refused with
/// their line.
fn substitute(text: &str, file: &str) -> Result<String, ImportError> {
    // The part of a line before its comment: `#` or `!` where a word would start (as the
    // tokenizer reads it).
    let code = |line: &str| -> usize {
        let mut prev_space = true;
        for (i, c) in line.char_indices() {
            if prev_space && (c == '#' || c == '!') {
                return i;
            }
            prev_space = c.is_whitespace() || c == '{' || c == '}';
        }
        line.len()
    };
    let mut defs: Vec<(String, String)> = Vec::new();
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        let body = &line[..code(line)];
        if body.contains("{{") || body.contains("{%") || body.contains("%}") {
            return Err(ImportError::Syntax {
                at,
                message: format!(
                    "{:?} is a template placeholder: render the template (Ansible, Jinja, ...) first",
                    body.trim()
                ),
            });
        }
        if let Some(def) = body.trim_start().strip_prefix('$')
            && let Some((name, value)) = def.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            defs.retain(|(n, _)| n != name);
            defs.push((name.to_owned(), value.trim().to_owned()));
            out.push('\n');
            continue;
        }
        let mut line = line.to_owned();
        if body.contains('$') {
            // Longest names first, so that $AB is not taken for $A followed by B.
            let mut sorted = defs.clone();
            sorted.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
            for (name, value) in &sorted {
                line = line.replace(&format!("${{{name}}}"), value);
                line = line.replace(&format!("${name}"), value);
            }
            // An undefined `${NAME}` is a mistake; a lone `$` may be part of a password.
            let body = &line[..code(&line)];
            if let Some(i) = body.find("${") {
                let name: String = body[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                return Err(ImportError::Syntax {
                    at,
                    message: format!("${name} is not defined (keepalived's $NAME=value)"),
                });
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// Blocks nest at most this deep (keepalived's go three or four deep).
const MAX_NESTING: usize = 32;

/// The statements up to the `}` that closes the block opened at `opened_at` (the end of the
/// file at the top level), and whether that `}` was there: a block still open at the end of
/// the file is closed there, as keepalived does.
fn parse_block(
    tokens: &[(Token, usize)],
    i: &mut usize,
    file: &str,
    opened_at: Option<usize>,
    depth: usize,
) -> Result<(Vec<Node>, bool), ImportError> {
    let mut nodes = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut words_line = 0;
    // A statement that ended with its line: it may still take a block opened on the next one.
    let mut pending: Option<Node> = None;
    while let Some((token, line)) = tokens.get(*i) {
        *i += 1;
        match token {
            Token::Word(w) => {
                nodes.extend(pending.take());
                if words.is_empty() {
                    words_line = *line;
                }
                words.push(w.clone());
            }
            Token::Newline => {
                if !words.is_empty() {
                    nodes.extend(pending.take());
                    pending = Some(statement(std::mem::take(&mut words), file, words_line));
                }
            }
            Token::Open => {
                let (header, at) = if !words.is_empty() {
                    nodes.extend(pending.take());
                    (std::mem::take(&mut words), format!("{file}:{words_line}"))
                } else if let Some(p) = pending.take() {
                    (p.words, p.at)
                } else {
                    (Vec::new(), format!("{file}:{line}"))
                };
                if depth >= MAX_NESTING {
                    return Err(ImportError::Syntax {
                        at: format!("{file}:{line}"),
                        message: format!("blocks nested more than {MAX_NESTING} deep"),
                    });
                }
                let (block, closed) = parse_block(tokens, i, file, Some(*line), depth + 1)?;
                nodes.push(Node {
                    words: header,
                    block: Some(block),
                    at,
                    closed_by_eof: !closed,
                });
                if !closed {
                    // The end of the file closes every open block.
                    return Ok((nodes, opened_at.is_none()));
                }
            }
            Token::Close => {
                nodes.extend(pending.take());
                if !words.is_empty() {
                    nodes.push(statement(std::mem::take(&mut words), file, words_line));
                }
                if opened_at.is_some() {
                    return Ok((nodes, true));
                }
                // At the top level keepalived reads it as an unknown keyword, warns, and goes on.
                nodes.push(statement(vec!["}".into()], file, *line));
            }
        }
    }
    nodes.extend(pending.take());
    if !words.is_empty() {
        nodes.push(statement(words, file, words_line));
    }
    // Reaching the end of the file closes a block only at the top level.
    Ok((nodes, opened_at.is_none()))
}

/// A statement without a block.
fn statement(words: Vec<String>, file: &str, line: usize) -> Node {
    Node {
        words,
        block: None,
        at: format!("{file}:{line}"),
        closed_by_eof: false,
    }
}
