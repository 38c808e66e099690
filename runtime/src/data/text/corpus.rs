//! The embedded corpus: short children's stories from a small seeded grammar, generated
//! by the runtime (no download, no file).
//!
//! Each story has the same outline (a hero, a home, an object found somewhere, a friend,
//! a little dialogue, perhaps a mishap and its fix, and an ending) filled from small word
//! lists, with pronoun and article agreement and past-tense verbs. The repeated structure
//! and the agreement give a language model something to learn quickly: the text's
//! next-byte entropy given a short context is far below its byte unigram entropy.
//!
//! Deterministic and bit-identical on every machine: only the data module's own
//! generator ([`Rng`]) and string building.

use crate::data::rng::Rng;

/// The stream id under the seed, so the corpus draws numbers no image set draws.
const CORPUS_STREAM: u64 = 0x7E47_C0B0;

/// About `bytes` bytes of stories (whole stories, one a line, until at least `bytes`),
/// from `seed`. A larger `bytes` extends the text without changing its start.
pub fn embedded_corpus(bytes: usize, seed: u64) -> String {
    let mut rng = Rng::stream(seed, &[CORPUS_STREAM]);
    let mut text = String::with_capacity(bytes + 1024);
    while text.len() < bytes {
        let story = Story::draw(&mut rng);
        text.push_str(&story.tell(&mut rng));
        text.push('\n');
    }
    text
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gender {
    Female,
    Male,
}

impl Gender {
    fn subject(self) -> &'static str {
        match self {
            Gender::Female => "she",
            Gender::Male => "he",
        }
    }

    fn object(self) -> &'static str {
        match self {
            Gender::Female => "her",
            Gender::Male => "him",
        }
    }

    fn possessive(self) -> &'static str {
        match self {
            Gender::Female => "her",
            Gender::Male => "his",
        }
    }
}

const GIRLS: &[&str] = &["Lily", "Mia", "Sue", "Anna", "Emma", "Lucy", "Zoe", "Sara", "Amy", "Kim", "Ella", "Rose"];
const BOYS: &[&str] = &["Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Bob", "Finn", "Joe", "Dan", "Ned"];
const ANIMALS: &[&str] =
    &["cat", "dog", "bird", "bear", "fox", "frog", "duck", "mouse", "owl", "rabbit", "puppy", "kitten"];
const TRAITS: &[&str] =
    &["little", "happy", "kind", "brave", "shy", "curious", "small", "friendly", "silly", "clever", "old", "gentle"];
const HOMES: &[&str] = &[
    "in a small house",
    "in a big house near the woods",
    "in a little town",
    "on a farm",
    "by the sea",
    "in a house with a red door",
];
const FAMILY: &[&str] = &["mom", "dad", "grandma", "grandpa", "sister", "brother"];
const PLACES: &[&str] =
    &["the park", "the garden", "the lake", "the beach", "the forest", "the hill", "the river", "the market"];
const COLOURS: &[&str] = &["red", "blue", "big", "shiny", "soft", "old", "new", "yellow", "green", "tiny", "pretty"];
const OBJECTS: &[&str] =
    &["ball", "kite", "box", "flower", "hat", "book", "shell", "balloon", "apple", "egg", "umbrella", "drum", "boat"];
/// Activities: (base form, past tense).
const ACTIVITIES: &[(&str, &str)] = &[
    ("play", "played"),
    ("run", "ran"),
    ("jump", "jumped"),
    ("dance", "danced"),
    ("sing", "sang"),
    ("swim", "swam"),
    ("draw", "drew"),
    ("climb", "climbed"),
    ("paint", "painted"),
];
const FINDS: &[&str] = &["found", "saw", "got"];
const GLAD: &[&str] = &["happy", "excited", "surprised", "proud"];
const SAD: &[&str] = &["sad", "scared", "worried", "upset"];
/// Mishaps of the object, each with what the friend did about it.
const MISHAPS: &[(&str, &str)] = &[
    ("flew up into a tall tree", "climbed the tree and got it back"),
    ("fell into the pond", "used a long stick to pull it out"),
    ("rolled under a big rock", "pushed the rock away and found it"),
    ("got stuck on the roof", "got a ladder and took it down"),
    ("was carried away by the wind", "ran very fast and caught it"),
    ("got lost in the tall grass", "looked everywhere and found it"),
    ("broke into two pieces", "fixed it with some glue"),
];

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

/// "a" or "an", by the next word's first letter.
fn article(word: &str) -> &'static str {
    match word.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

/// The word with its first letter upper-cased (for sentence starts).
fn capital(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |c| c.to_ascii_uppercase().to_string() + chars.as_str())
}

#[derive(Debug, Clone, Copy)]
struct Character {
    name: &'static str,
    kind: &'static str,
    trait_: &'static str,
    gender: Gender,
}

impl Character {
    fn draw(rng: &mut Rng, not_named: Option<&str>) -> Character {
        loop {
            let gender = if rng.coin() { Gender::Female } else { Gender::Male };
            let name = pick(rng, if gender == Gender::Female { GIRLS } else { BOYS });
            let child = if gender == Gender::Female { "girl" } else { "boy" };
            let kind = if rng.coin() { child } else { pick(rng, ANIMALS) };
            if not_named != Some(name) {
                return Character { name, kind, trait_: pick(rng, TRAITS), gender };
            }
        }
    }

    /// "a little girl", "an old fox".
    fn described(&self) -> String {
        format!("{} {} {}", article(self.trait_), self.trait_, self.kind)
    }

    fn she(&self) -> String {
        capital(self.gender.subject())
    }
}

/// One story's cast and props, drawn before it is told.
#[derive(Debug, Clone, Copy)]
struct Story {
    hero: Character,
    friend: Character,
    colour: &'static str,
    object: &'static str,
    place: &'static str,
    activity: (&'static str, &'static str),
    mishap: Option<(&'static str, &'static str)>,
    shares: bool,
}

impl Story {
    fn draw(rng: &mut Rng) -> Story {
        let hero = Character::draw(rng, None);
        let friend = Character::draw(rng, Some(hero.name));
        Story {
            hero,
            friend,
            colour: pick(rng, COLOURS),
            object: pick(rng, OBJECTS),
            place: pick(rng, PLACES),
            activity: pick(rng, ACTIVITIES),
            mishap: (rng.below(3) != 0).then(|| pick(rng, MISHAPS)),
            shares: rng.below(4) != 0,
        }
    }

    /// The whole story, one line.
    fn tell(&self, rng: &mut Rng) -> String {
        let mut s = Vec::with_capacity(16);
        self.opening(rng, &mut s);
        self.finding(rng, &mut s);
        self.meeting(&mut s);
        if let Some(mishap) = self.mishap {
            self.trouble(rng, mishap, &mut s);
        }
        self.ending(rng, &mut s);
        s.join(" ")
    }

    fn opening(&self, rng: &mut Rng, s: &mut Vec<String>) {
        let (h, (base, _)) = (&self.hero, self.activity);
        s.push(match rng.below(3) {
            0 => format!("Once upon a time, there was {} named {}.", h.described(), h.name),
            1 => format!("There once was {} called {}.", h.described(), h.name),
            _ => format!("{} was {}.", h.name, h.described()),
        });
        s.push(format!("{} lived {}.", h.she(), pick(rng, HOMES)));
        s.push(match rng.coin() {
            true => format!("{} loved to {base}.", h.she()),
            false => format!(
                "Every day, {} liked to {base} with {} {}.",
                h.gender.subject(),
                h.gender.possessive(),
                pick(rng, FAMILY)
            ),
        });
    }

    fn finding(&self, rng: &mut Rng, s: &mut Vec<String>) {
        let h = &self.hero;
        s.push(format!("One day, {} went to {}.", h.name, self.place));
        let found = pick(rng, FINDS);
        s.push(format!(
            "There, {} {found} {} {} {}.",
            h.gender.subject(),
            article(self.colour),
            self.colour,
            self.object
        ));
        s.push(format!("{} was very {}.", h.she(), pick(rng, GLAD)));
    }

    fn meeting(&self, s: &mut Vec<String>) {
        let (h, f, o) = (&self.hero, &self.friend, self.object);
        s.push(format!("Then {} saw {} friend {}, {}.", h.name, h.gender.possessive(), f.name, f.described()));
        s.push(format!("\"Look at my {o}!\" said {}.", h.name));
        s.push(format!("\"Can I play with your {o} too?\" asked {}.", f.name));
        if self.shares {
            s.push(format!("\"Yes, let us play together!\" said {}.", h.name));
        } else {
            s.push(format!("\"No, it is mine!\" said {}.", h.name));
            s.push(format!("{} was sad and went home.", f.name));
        }
    }

    fn trouble(&self, rng: &mut Rng, (what, fix): (&str, &str), s: &mut Vec<String>) {
        let (h, f) = (&self.hero, &self.friend);
        s.push(format!("But then, the {} {what}.", self.object));
        s.push(format!("{} was {}.", h.name, pick(rng, SAD)));
        if !self.shares {
            s.push(format!("{} came back to help {}.", f.name, h.gender.object()));
        }
        s.push(format!("{} {fix}.", f.name));
        s.push(format!("\"Thank you, {}!\" said {}.", f.name, h.name));
    }

    fn ending(&self, rng: &mut Rng, s: &mut Vec<String>) {
        let (h, f, (_, past)) = (&self.hero, &self.friend, self.activity);
        if self.shares || self.mishap.is_some() {
            s.push(format!("{} and {} {past} together all day.", h.name, f.name));
        }
        s.push(match (self.shares, rng.below(3)) {
            (false, _) => format!("{} learned that sharing is good.", h.name),
            (true, 0) => format!("From that day on, {} and {} were best friends.", h.name, f.name),
            (true, 1) => format!("At the end of the day, {} went home. {} was tired but happy.", h.name, h.she()),
            (true, _) => format!("{} put the {} in {} room and smiled.", h.name, self.object, h.gender.possessive()),
        });
        if rng.coin() {
            s.push("The end.".to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Entropy in bits of the next byte given the `order` bytes before it (order 0: the
    /// byte unigram entropy), from the text's own counts.
    fn conditional_entropy(text: &[u8], order: usize) -> f64 {
        let mut joint: HashMap<&[u8], u64> = HashMap::new();
        let mut context: HashMap<&[u8], u64> = HashMap::new();
        for w in text.windows(order + 1) {
            *joint.entry(w).or_default() += 1;
            *context.entry(&w[..order]).or_default() += 1;
        }
        let n = (text.len() - order) as f64;
        joint.iter().map(|(w, &c)| -(c as f64 / n) * (c as f64 / context[&w[..order]] as f64).log2()).sum()
    }

    #[test]
    fn the_corpus_is_learnable_next_bytes_are_far_more_predictable_than_bytes() {
        let text = embedded_corpus(300_000, 0);
        let unigram = conditional_entropy(text.as_bytes(), 0);
        let bigram = conditional_entropy(text.as_bytes(), 1);
        let trigram = conditional_entropy(text.as_bytes(), 2);
        eprintln!("byte entropy: unigram {unigram:.3}, bigram {bigram:.3}, trigram {trigram:.3} bits");
        assert!(unigram > 3.5, "premise: English-like text has a byte entropy near 4 bits, got {unigram}");
        assert!(bigram < unigram - 1.0, "bigram {bigram} vs unigram {unigram}");
        assert!(trigram < unigram - 2.0, "trigram {trigram} vs unigram {unigram}");
    }

    #[test]
    fn the_corpus_is_deterministic_and_its_seed_matters() {
        let a = embedded_corpus(50_000, 1);
        assert_eq!(a, embedded_corpus(50_000, 1));
        assert_ne!(a, embedded_corpus(50_000, 2));
        assert!(a.len() >= 50_000 && a.len() < 51_000, "{}", a.len());
        assert!(embedded_corpus(80_000, 1).starts_with(&a), "a larger corpus extends a smaller one");
        assert!(a.is_ascii() && a.ends_with('\n'));
    }

    #[test]
    fn the_default_size_is_generated_quickly() {
        let started = std::time::Instant::now();
        let text = embedded_corpus(crate::data::text::DEFAULT_CORPUS_BYTES, 0);
        let elapsed = started.elapsed();
        eprintln!("{} bytes in {elapsed:?}", text.len());
        assert!(elapsed.as_secs_f64() < 1.0, "{elapsed:?}");
    }

    #[test]
    fn agreement_pronouns_and_articles() {
        let text = embedded_corpus(100_000, 4);
        assert!(!text.contains(" a old") && !text.contains(" a apple") && !text.contains(" an big"));
        for line in text.lines().take(300) {
            // The hero is the first name in the story; only the hero gets pronouns.
            let words: Vec<&str> = line.split(|c: char| !c.is_ascii_alphabetic()).collect();
            let hero = words.iter().find(|w| GIRLS.contains(w) || BOYS.contains(w)).unwrap();
            let hero_is_girl = GIRLS.contains(hero);
            let wrong: &[&str] = if hero_is_girl { &["he", "He", "his", "him"] } else { &["she", "She", "her"] };
            assert!(!words.iter().any(|w| wrong.contains(w)), "{line}");
        }
    }
}
