//! The documentation is tested, so it cannot drift from the code: in README.md,
//! CHANGELOG.md and every chapter of the book (`docs/src/**/*.md`),
//!
//! * every ```` ```toml ```` block passes `esper config check` (a block marked
//!   ```` ```toml,ignore-check ```` is skipped: the book's contributing chapter says when);
//! * every `esper ...` line of a ```` ```sh ````, ```` ```console ```` or ```` ```bash ````
//!   block parses: the real binary runs it with `--help` appended, which fails for an
//!   unknown command, flag or bad value;
//! * every relative link `[text](path)` resolves to a file, and its `#anchor`, where the
//!   target is a markdown file, to one of its headings.

use esper_tests::{esper, stderr, stdout, temp_dir};
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// A fenced code block: its language, the words after it (`ignore-check`), where it
/// starts and its lines.
struct Block {
    lang: String,
    flags: Vec<String>,
    line: usize,
    lines: Vec<String>,
}

/// A markdown file split into fenced blocks and the lines outside them.
struct Doc {
    path: PathBuf,
    blocks: Vec<Block>,
    /// (line number, text) of every line outside a fenced block.
    prose: Vec<(usize, String)>,
}

impl Doc {
    fn read(path: &Path) -> Doc {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let (mut blocks, mut prose) = (Vec::new(), Vec::new());
        let mut open: Option<(String, Block)> = None;
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            let fence: String = trimmed.chars().take_while(|&c| c == '`' || c == '~').collect();
            match open.take() {
                Some((opening, block)) if fence.len() >= opening.len() && trimmed.trim_end() == fence => {
                    blocks.push(block);
                }
                Some((opening, mut block)) => {
                    block.lines.push(line.to_string());
                    open = Some((opening, block));
                }
                None if fence.len() >= 3 => {
                    let info = trimmed[fence.len()..].trim();
                    let mut words = info.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty());
                    let lang = words.next().unwrap_or("").to_string();
                    let flags = words.map(str::to_string).collect();
                    open = Some((fence, Block { lang, flags, line: i + 1, lines: Vec::new() }));
                }
                None => prose.push((i + 1, line.to_string())),
            }
        }
        assert!(open.is_none(), "{}: a code block is never closed", path.display());
        Doc { path: path.to_path_buf(), blocks, prose }
    }

    fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.path.display())
    }

    /// The anchors of its headings, as mdBook and GitHub make them.
    fn anchors(&self) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for (_, line) in &self.prose {
            let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')) else { continue };
            if !title.starts_with(' ') {
                continue;
            }
            let base = slug(title.trim());
            let mut anchor = base.clone();
            for n in 1.. {
                if !seen.contains(&anchor) {
                    break;
                }
                anchor = format!("{base}-{n}");
            }
            seen.insert(anchor);
        }
        seen
    }
}

/// A heading's anchor: lower case, letters, digits, `-` and `_` kept, whitespace to `-`.
fn slug(title: &str) -> String {
    title
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_lowercase().next().unwrap_or(c)),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// A command line's words as a POSIX shell splits them (quotes, backslashes), up to a
/// comment or the first pipe, list operator or redirection.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let end = words
        .iter()
        .position(|w| matches!(w.as_str(), "|" | "||" | "&&" | ";" | "&") || w.starts_with('>') || w.starts_with("2>"))
        .unwrap_or(words.len());
    words.truncate(end);
    words
}

/// The `esper` command lines of a shell block (a `$ ` prompt dropped, `\` continuations
/// joined), as (line number, arguments after `esper`).
fn esper_lines(block: &Block) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in block.lines.iter().enumerate() {
        let (start, text) = match pending.take() {
            Some((start, before)) => (start, format!("{before} {}", line.trim())),
            None => (block.line + 1 + i, line.trim().trim_start_matches("$ ").to_string()),
        };
        if let Some(head) = text.strip_suffix('\\') {
            pending = Some((start, head.to_string()));
            continue;
        }
        let words = shell_words(&text);
        if words.first().is_some_and(|w| w == "esper" || w.ends_with("/esper")) {
            out.push((start, words[1..].to_vec()));
        }
    }
    out
}

/// The targets of the links and images on a line, inline code left out.
fn link_targets(line: &str) -> Vec<String> {
    let mut plain = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            plain.push_str(part);
        }
    }
    let mut targets = Vec::new();
    if let Some(rest) = plain.trim_start().strip_prefix('[') {
        // A reference definition: `[name]: target`.
        if let Some((_, target)) = rest.split_once("]:") {
            targets.extend(target.split_whitespace().next().map(str::to_string));
        }
    }
    let mut rest = plain.as_str();
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        targets.extend(rest[..end].split_whitespace().next().map(|t| t.trim_matches(['<', '>']).to_string()));
        rest = &rest[end..];
    }
    targets
}

/// Every problem with a link of `doc`: a missing file, or an anchor no heading makes.
fn check_links(doc: &Doc) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, line) in &doc.prose {
        for target in link_targets(line) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file =
                if path.is_empty() { doc.path.clone() } else { doc.path.parent().unwrap_or(Path::new(".")).join(path) };
            if !file.exists() {
                problems.push(format!("{}: link to `{target}`: {} does not exist", doc.at(*n), file.display()));
            } else if !anchor.is_empty()
                && file.extension().is_some_and(|e| e == "md")
                && !Doc::read(&file).anchors().contains(anchor)
            {
                problems.push(format!(
                    "{}: link to `{target}`: no heading in {} makes #{anchor}",
                    doc.at(*n),
                    file.display()
                ));
            }
        }
    }
    problems
}

/// One check that runs the binary.
enum Job {
    /// A TOML block for `esper config check`.
    Config { at: String, text: String },
    /// An `esper` command line to parse.
    Command { at: String, args: Vec<String> },
}

impl Job {
    fn run(&self, dir: &Path, n: usize) -> Option<String> {
        match self {
            Job::Config { at, text } => {
                let path = dir.join(format!("block-{n}.toml"));
                std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
                let out = esper().args(["config", "check"]).arg(&path).output().expect("esper runs");
                (!out.status.success())
                    .then(|| format!("{at}: this TOML block fails `esper config check`:\n{}", stderr(&out)))
            }
            Job::Command { at, args } => {
                let out = esper().args(args).arg("--help").output().expect("esper runs");
                let ok = out.status.success() && stdout(&out).contains("Usage: esper");
                (!ok).then(|| format!("{at}: `esper {}` does not parse:\n{}", args.join(" "), stderr(&out)))
            }
        }
    }
}

/// Every problem in the markdown files `paths`, each as `file:line: what`.
pub fn check_docs(paths: &[PathBuf], scratch: &Path) -> Vec<String> {
    let docs: Vec<Doc> = paths.iter().map(|p| Doc::read(p)).collect();
    let mut problems: Vec<String> = docs.iter().flat_map(check_links).collect();
    let mut jobs = Vec::new();
    let mut commands = BTreeSet::new();
    for doc in &docs {
        for block in &doc.blocks {
            match block.lang.as_str() {
                "toml" if !block.flags.iter().any(|f| f == "ignore-check") => {
                    jobs.push(Job::Config { at: doc.at(block.line), text: block.lines.join("\n") + "\n" })
                }
                "sh" | "console" | "bash" => {
                    for (line, args) in esper_lines(block) {
                        if commands.insert(args.clone()) {
                            jobs.push(Job::Command { at: doc.at(line), args });
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // Each job starts the binary (libtorch and the plugins load): a few at a time.
    let next = Mutex::new(jobs.iter().enumerate());
    let found = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let Some((n, job)) = next.lock().expect("not poisoned").next() else { break };
                if let Some(problem) = job.run(scratch, n) {
                    found.lock().expect("not poisoned").push(problem);
                }
            });
        }
    });
    problems.extend(found.into_inner().expect("not poisoned"));
    problems.sort();
    problems
}

/// README.md, CHANGELOG.md and every markdown file under docs/src.
fn documentation(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    walk(&root.join("docs/src"), &mut files);
    files.sort();
    files
}

#[test]
fn every_config_command_and_link_of_the_docs_works() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf();
    let files = documentation(&root);
    assert!(files.len() > 5, "README and the book's chapters: {files:?}");
    let problems = check_docs(&files, &temp_dir("docs"));
    assert!(problems.is_empty(), "{} problem(s) in the docs:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn the_docs_check_finds_a_bad_key_command_flag_link_and_anchor() {
    let dir = temp_dir("docs-check");
    std::fs::write(dir.join("other.md"), "# Other page\n\n## The `esper` command\n").unwrap();
    let page = dir.join("page.md");
    let text = "# Page\n\
        \n\
        ```toml\n[training]\nepochs = 3\n```\n\
        \n\
        ```toml\n[training]\nepoch = 3\n```\n\
        \n\
        ```toml,ignore-check\n[[plugins]]\npath = \"missing.so\"\n```\n\
        \n\
        ```sh\nesper run --epochs 3 # a comment\nesper run \\\n    --frobnicate\nesper frob\ncargo run --frob\n```\n\
        \n\
        [fine](other.md#the-esper-command), [also fine](#page), `[not a link](nowhere.md)`\n\
        [gone](missing.md) and [no such heading](other.md#nothing)\n";
    std::fs::write(&page, text).unwrap();
    let problems = check_docs(std::slice::from_ref(&page), &dir);
    let at = |line: usize| format!("{}:{line}: ", page.display());
    let expected = [
        (at(8), "fails `esper config check`"),
        (at(20), "`esper run --frobnicate` does not parse"),
        (at(22), "`esper frob` does not parse"),
        (at(27), "link to `missing.md`"),
        (at(27), "no heading in"),
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (start, what) in expected {
        assert!(problems.iter().any(|p| p.starts_with(&start) && p.contains(what)), "{start}{what}: {problems:#?}");
    }
}
