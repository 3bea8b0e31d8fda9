//! The check's fast path: the whole frame as bit masks, 64 bytes at a time.
//!
//! The scanner in the parent module decides token by token, and on a 1.5 KB
//! telemetry frame (some 400 short keys, numbers and separators) those decisions
//! are most of the processor's CPU per frame. Here AVX2 classifies each 64-byte
//! block into one mask per byte class (quote, whitespace, digit, …), and the rules
//! of the grammar become a few dozen bitwise operations per block, in the manner
//! of simdjson's first stage (Langdale and Lemire, "Parsing Gigabytes of JSON per
//! Second", 2019), carried further so that numbers and the order of tokens are
//! checked on the masks too:
//!
//! - **Strings.** With no backslash in the frame, the prefix XOR of the quote mask
//!   marks every string's bytes. A control character inside, or a byte outside
//!   that no token may hold, is a fault.
//! - **Numbers** (`-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`). Each run of scalar
//!   characters that is not `true`, `false` or `null` must be one. Local rules say
//!   what may precede or follow a sign, a dot, an exponent and a leading zero; and
//!   adding a digit run's first bit to the digit mask carries to the first byte
//!   after the run, which must be a dot or an exponent (the integer part), an
//!   exponent (the fraction) or the end of the run (the exponent).
//! - **Order.** `next(x)`, the first byte after each bit of `x` that is not
//!   whitespace, is a shift and an addition: the carry runs through the whitespace.
//!   After `{` comes a key or `}`; after `:` a value; after `,` a key in an object
//!   and a value in an array; after a key `:`; after a value `,` or a closer.
//!   Whether a string is a key is known where it starts (what precedes it), and
//!   its closing quote is found by the same carry, through the string's mask.
//! - **Nesting.** The brackets (a few dozen per frame) are matched one by one;
//!   they also say, for the bytes that follow each, whether they are in an object.
//!
//! It only ever says "valid" (with what [`super::check_finding`] answers) or "not
//! for me": a frame with a backslash, one that does not start with `{`, one past
//! [`MAX_LEN`], one nested past [`super::MAX_DEPTH`], a lap field whose value is a
//! container, and every faulty frame go to the scanner, which also words the
//! error. A test holds the two to the same answers on every sample and mutation.

use super::{Checked, MAX_DEPTH};

/// Longer frames go to the scanner (telemetry is 0.5–2 KB).
pub(super) const MAX_LEN: usize = 4096;

/// One bit per byte of a 64-byte block, lowest bit first.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Block {
    quote: u64,
    /// Space, tab, line feed, carriage return.
    ws: u64,
    /// Below 0x20: never allowed unescaped in a string.
    ctrl: u64,
    /// Anything no token may hold outside a string.
    other: u64,
    /// `{ } [ ]`.
    bracket: u64,
    colon: u64,
    comma: u64,
    digit: u64,
    zero: u64,
    dot: u64,
    minus: u64,
    plus: u64,
    /// `e` or `E`.
    exp: u64,
    /// A backslash or a byte past ASCII: rare, so looked at byte by byte.
    rare: u64,
}

/// The fast path, where the CPU has AVX2: `Some` only for a frame it proves well
/// formed, `None` for the scanner to decide.
pub(super) fn check(b: &[u8], field: Option<&str>) -> Option<Checked> {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    #[cfg(target_arch = "x86_64")]
    if !*OFF.get_or_init(|| std::env::var_os("BLOCKS_OFF").is_some())
        && std::arch::is_x86_feature_detected!("avx2")
    {
        // SAFETY: the CPU has AVX2, checked just above.
        return run(b, field, |b, blocks| unsafe {
            avx2::classify_all(b, blocks)
        });
    }
    let _ = (b, field);
    None
}

/// The mask rules with the byte-by-byte classification, on any CPU.
#[cfg(test)]
pub(super) fn check_bytes(b: &[u8], field: Option<&str>) -> Option<Checked> {
    run(b, field, |b, blocks| {
        classify_all(b, blocks, classify_bytes)
    })
}

/// The classification byte by byte: the reference the AVX2 version is tested
/// against, and the way tests reach the mask rules on any CPU.
#[cfg(test)]
fn classify_bytes(block: &[u8; 64]) -> Block {
    let mut m = Block::default();
    for (i, &c) in block.iter().enumerate() {
        let bit = 1u64 << i;
        let set = |mask: &mut u64, on: bool| *mask |= if on { bit } else { 0 };
        set(&mut m.quote, c == b'"');
        set(&mut m.ws, matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
        set(&mut m.ctrl, c < 0x20);
        set(&mut m.bracket, matches!(c, b'{' | b'}' | b'[' | b']'));
        set(&mut m.colon, c == b':');
        set(&mut m.comma, c == b',');
        set(&mut m.digit, c.is_ascii_digit());
        set(&mut m.zero, c == b'0');
        set(&mut m.dot, c == b'.');
        set(&mut m.minus, c == b'-');
        set(&mut m.plus, c == b'+');
        set(&mut m.exp, c == b'e' || c == b'E');
        set(&mut m.rare, c == b'\\' || c >= 0x80);
        let allowed = matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'{' | b'}')
            || matches!(c, b'[' | b']' | b':' | b',' | b'.' | b'-' | b'+')
            || c.is_ascii_alphanumeric();
        set(&mut m.other, !allowed);
    }
    m
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Block;
    use std::arch::x86_64::*;

    /// [`super::run`] compiled for AVX2, so that the classification is inlined.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn classify_all(b: &[u8], blocks: &mut [Block; super::WORDS]) -> u64 {
        let mut rare = 0;
        let mut chunks = b.chunks_exact(64);
        let mut word = 0;
        for chunk in &mut chunks {
            // SAFETY: this function has AVX2.
            let m = unsafe { classify(chunk.try_into().expect("64 bytes")) };
            rare |= m.rare;
            blocks[word] = m;
            word += 1;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut padded = [b' '; 64];
            padded[..rest.len()].copy_from_slice(rest);
            // SAFETY: this function has AVX2.
            let m = unsafe { classify(&padded) };
            rare |= m.rare;
            blocks[word] = m;
        }
        rare
    }

    /// [`super::classify_bytes`] in vector instructions, 32 bytes at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn classify(block: &[u8; 64]) -> Block {
        let lo = half(block[..32].try_into().expect("32 bytes"));
        let hi = half(block[32..].try_into().expect("32 bytes"));
        let join = |l: u32, h: u32| u64::from(l) | (u64::from(h) << 32);
        Block {
            quote: join(lo.quote, hi.quote),
            ws: join(lo.ws, hi.ws),
            ctrl: join(lo.ctrl, hi.ctrl),
            other: join(lo.other, hi.other),
            bracket: join(lo.bracket, hi.bracket),
            colon: join(lo.colon, hi.colon),
            comma: join(lo.comma, hi.comma),
            digit: join(lo.digit, hi.digit),
            zero: join(lo.zero, hi.zero),
            dot: join(lo.dot, hi.dot),
            minus: join(lo.minus, hi.minus),
            plus: join(lo.plus, hi.plus),
            exp: join(lo.exp, hi.exp),
            rare: join(lo.rare, hi.rare),
        }
    }

    struct Half {
        quote: u32,
        ws: u32,
        ctrl: u32,
        other: u32,
        bracket: u32,
        colon: u32,
        comma: u32,
        digit: u32,
        zero: u32,
        dot: u32,
        minus: u32,
        plus: u32,
        exp: u32,
        rare: u32,
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn half(bytes: &[u8; 32]) -> Half {
        // SAFETY: the unaligned load reads exactly the 32 bytes `bytes` borrows.
        let v = unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) };
        let eq = |c: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(c as i8));
        let mask = |m: __m256i| _mm256_movemask_epi8(m) as u32;
        // Unsigned "at most": min(x, max) == x.
        let at_most = |x: __m256i, max: u8| {
            _mm256_cmpeq_epi8(_mm256_min_epu8(x, _mm256_set1_epi8(max as i8)), x)
        };
        // Whitespace by a table on the low nibble (a byte with its top bit set
        // looks up 0, which no such byte equals): ' ' 0x20, '\t' 0x09, '\n' 0x0a,
        // '\r' 0x0d; every other entry is 0xff, which no ASCII byte equals.
        let table = _mm256_setr_epi8(
            0x20, -1, -1, -1, -1, -1, -1, -1, -1, 0x09, 0x0a, -1, -1, 0x0d, -1, -1, 0x20, -1, -1,
            -1, -1, -1, -1, -1, -1, 0x09, 0x0a, -1, -1, 0x0d, -1, -1,
        );
        let ws = _mm256_cmpeq_epi8(_mm256_shuffle_epi8(table, v), v);
        // Lower case for the brackets and letters: '[' | 0x20 is '{', ']' | 0x20 '}'.
        let lower = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
        let bracket = _mm256_or_si256(
            _mm256_cmpeq_epi8(lower, _mm256_set1_epi8(b'{' as i8)),
            _mm256_cmpeq_epi8(lower, _mm256_set1_epi8(b'}' as i8)),
        );
        let digit = at_most(_mm256_sub_epi8(v, _mm256_set1_epi8(b'0' as i8)), 9);
        let letter = at_most(_mm256_sub_epi8(lower, _mm256_set1_epi8(b'a' as i8)), 25);
        let (quote, colon, comma) = (eq(b'"'), eq(b':'), eq(b','));
        let (dot, minus, plus) = (eq(b'.'), eq(b'-'), eq(b'+'));
        let or = |a, b| _mm256_or_si256(a, b);
        let allowed = or(
            or(or(ws, quote), or(bracket, colon)),
            or(or(comma, digit), or(or(dot, minus), or(plus, letter))),
        );
        Half {
            quote: mask(quote),
            ws: mask(ws),
            ctrl: mask(at_most(v, 0x1f)),
            other: !mask(allowed),
            bracket: mask(bracket),
            colon: mask(colon),
            comma: mask(comma),
            digit: mask(digit),
            zero: mask(eq(b'0')),
            dot: mask(dot),
            minus: mask(minus),
            plus: mask(plus),
            exp: mask(_mm256_cmpeq_epi8(lower, _mm256_set1_epi8(b'e' as i8))),
            // The top bit is the byte past ASCII.
            rare: mask(or(eq(b'\\'), v)),
        }
    }
}

/// Each bit set where an odd number of bits of `x` are set at or below it.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Each bit moved one byte on (it marks the byte after), with the last bit of
/// the block before.
#[inline(always)]
fn after(x: u64, earlier: u64) -> u64 {
    (x << 1) | (earlier >> 63)
}

/// Each bit moved one byte back (it marks the byte before), with the first bit
/// of the block after.
#[inline(always)]
fn before(x: u64, later: u64) -> u64 {
    (x >> 1) | (later << 63)
}

/// The carry of an addition over the whole frame, block by block.
#[derive(Default)]
struct Carry(bool);

impl Carry {
    /// `run + seeds`: a seed at the first bit of a run of `run` comes out as one
    /// bit just past that run (in a later block, if the run goes on).
    #[inline(always)]
    fn add(&mut self, run: u64, seeds: u64) -> u64 {
        let (sum, c1) = run.overflowing_add(seeds);
        let (sum, c2) = sum.overflowing_add(u64::from(self.0));
        self.0 = c1 | c2;
        sum
    }
}

/// `next(x)`: from the byte after each bit of `x`, the first that is not
/// whitespace. `SPACED`: whether there is whitespace between tokens at all;
/// monitors send compact JSON, where the next token is the next byte.
#[derive(Default)]
struct Next {
    earlier: u64,
    skip: Carry,
}

impl Next {
    #[inline(always)]
    fn of<const SPACED: bool>(&mut self, x: u64, ws: u64) -> u64 {
        let at = after(x, self.earlier);
        self.earlier = x;
        self.from::<SPACED>(at, ws)
    }

    /// The same from each bit of `at` itself.
    #[inline(always)]
    fn from<const SPACED: bool>(&mut self, at: u64, ws: u64) -> u64 {
        if SPACED {
            (self.skip.add(ws, at & ws) & !ws) | (at & !ws)
        } else {
            at
        }
    }

    /// Whether a bit went past the frame's end.
    fn left(&self) -> bool {
        self.earlier >> 63 != 0 || self.skip.0
    }
}

/// Blocks in a frame of [`MAX_LEN`], and one more: the block after the last
/// reads as nothing when a rule looks one byte ahead.
const WORDS: usize = MAX_LEN / 64 + 1;

/// Per block, what one pass leaves for the next: the passes are short loops
/// over these arrays, each with few values live, so that they stay in registers
/// (one loop doing everything spilled half its values to the stack).
#[derive(Clone, Copy, Default)]
struct Derived {
    /// The strings' bytes, opening quote included, closing quote not.
    inside: u64,
    /// Numbers' bytes.
    number: u64,
    /// The first byte of each number or literal.
    run_start: u64,
    /// The byte just after each number or literal.
    after_run: u64,
    open_object: u64,
    open_array: u64,
    /// Closing brackets, but for the top-level object's.
    close: u64,
    colon: u64,
    object_comma: u64,
    array_comma: u64,
    /// Directly in the top-level object (where the lap field is looked for).
    top: u64,
}

/// The arrays, kept per thread: filling them anew for every frame would cost
/// as much as a pass.
struct Scratch {
    blocks: [Block; WORDS],
    derived: [Derived; WORDS],
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<Scratch>> = std::cell::RefCell::new(Box::new(Scratch {
        blocks: [Block::default(); WORDS],
        derived: [Derived::default(); WORDS],
    }));
}

/// The raw bytes a number or a literal may hold (valid outside strings only).
#[inline(always)]
fn scalar_bytes(m: &Block) -> u64 {
    !(m.other | m.ws | m.quote | m.bracket | m.colon | m.comma)
}

/// Mask of the bits of block `base` (its first byte's offset) in `from..to`.
#[inline(always)]
fn span(base: usize, from: usize, to: usize) -> u64 {
    let upto = |i: usize| match i.saturating_sub(base) {
        64.. => !0u64,
        n => (1u64 << n) - 1,
    };
    upto(to) & !upto(from)
}

#[inline(always)]
fn run(
    b: &[u8],
    field: Option<&str>,
    classify_all: impl Fn(&[u8], &mut [Block; WORDS]) -> u64,
) -> Option<Checked> {
    let first = b.iter().position(|c| !c.is_ascii_whitespace())?;
    if b.len() > MAX_LEN || b[first] != b'{' {
        return None;
    }
    let last = b.iter().rposition(|c| !c.is_ascii_whitespace())?;
    let words = b.len().div_ceil(64);
    SCRATCH.with_borrow_mut(|scratch| {
        let Scratch { blocks, derived } = &mut **scratch;
        let rare = classify_all(b, blocks);
        blocks[words] = Block::default();
        // A backslash makes quotes escapable, which the masks do not follow.
        if rare != 0 && b.contains(&b'\\') {
            return None;
        }
        let ascii = rare == 0;
        let spaced = strings(b, words, first, last, blocks, derived)?;
        numbers(words, blocks, derived)?;
        let (blocks, derived) = (&blocks[..words], &mut derived[..words]);
        brackets(b, blocks, derived)?;
        let last_key = if spaced {
            order::<true>(b, blocks, derived, field)?
        } else {
            order::<false>(b, blocks, derived, field)?
        };
        let found = match (field, last_key) {
            (Some(field), Some(at)) => Some(value_of(b, at + field.len() + 2)?),
            _ => None,
        };
        Some(Checked { found, ascii })
    })
}

/// Pass 1: every block classified; answers the union of their `rare` masks.
#[cfg(test)]
fn classify_all(
    b: &[u8],
    blocks: &mut [Block; WORDS],
    classify: impl Fn(&[u8; 64]) -> Block,
) -> u64 {
    let mut rare = 0;
    for (slot, chunk) in blocks.iter_mut().zip(b.chunks(64)) {
        *slot = match chunk.try_into() {
            Ok(full) => classify(full),
            Err(_) => {
                // The last, short block: padded with whitespace, which may end
                // a JSON text.
                let mut padded = [b' '; 64];
                padded[..chunk.len()].copy_from_slice(chunk);
                classify(&padded)
            }
        };
        rare |= slot.rare;
    }
    rare
}

/// Pass 2: strings, the bytes outside them, literals. Whether there is
/// whitespace between tokens.
#[inline(always)]
fn strings(
    b: &[u8],
    words: usize,
    first: usize,
    last: usize,
    blocks: &[Block; WORDS],
    derived: &mut [Derived; WORDS],
) -> Option<bool> {
    let mut in_string = 0u64;
    let mut spaced = 0u64;
    let mut faults = 0u64;
    // Before the frame: as if whitespace.
    let mut scalar_earlier = 0u64;
    // A literal's bits that run into the next block.
    let mut literal_rest = 0u64;
    for word in 0..words {
        let base = word * 64;
        let m = &blocks[word];
        let inside = prefix_xor(m.quote) ^ in_string;
        in_string = ((inside as i64) >> 63) as u64;
        let outside = !(inside | m.quote);
        faults |= (m.ctrl & inside) | (m.other & outside);
        spaced |= m.ws & outside & span(base, first, last);
        // A byte next to one outside a string that is a scalar byte is outside
        // too (a string's last byte is its quote), so the raw neighbours serve.
        let raw = scalar_bytes(m);
        let scalar = raw & outside;
        let scalar_before = after(raw, scalar_earlier);
        scalar_earlier = raw;
        let run_start = scalar & !scalar_before;
        let after_run = scalar_before & !raw & (outside | (m.quote & inside));

        // Literals: a letter other than e may only start `true`, `false` or `null`.
        let numeric = m.digit | m.dot | m.minus | m.plus | m.exp;
        let mut letters = scalar & !numeric & !literal_rest;
        let mut literal = literal_rest;
        literal_rest = 0;
        while letters != 0 {
            let at = letters.trailing_zeros();
            if run_start & (1 << at) == 0 {
                return None;
            }
            let from = base + at as usize;
            let len = [&b"true"[..], b"false", b"null"]
                .into_iter()
                .find(|word| b[from..].starts_with(word))?
                .len();
            if b.get(from + len).is_some_and(|&c| is_scalar(c)) {
                return None;
            }
            let span = ((1u128 << len) - 1) << at;
            literal |= span as u64;
            literal_rest = (span >> 64) as u64;
            letters &= !(span as u64);
        }
        let d = &mut derived[word];
        d.inside = inside;
        d.number = scalar & !literal;
        d.run_start = run_start;
        d.after_run = after_run;
    }
    (faults == 0 && in_string == 0).then_some(spaced != 0)
}

/// Pass 3: every run that is not a literal is a number. Its neighbours are in
/// the same run or outside it, so the raw masks serve for them.
#[inline(always)]
fn numbers(words: usize, blocks: &[Block; WORDS], derived: &[Derived; WORDS]) -> Option<()> {
    let (mut int_run, mut fraction_run, mut exponent_run) =
        (Carry::default(), Carry::default(), Carry::default());
    let mut faults = 0u64;
    let none = Block::default();
    for word in 0..words {
        let (m, n) = (&blocks[word], &blocks[word + 1]);
        let p = if word == 0 { &none } else { &blocks[word - 1] };
        let d = &derived[word];
        let number = d.number;
        let (digit, dot, exp) = (m.digit & number, m.dot & number, m.exp & number);
        let (minus, plus) = (m.minus & number, m.plus & number);
        let start = d.run_start & number;
        let digit_before = after(m.digit, p.digit);
        let exp_before = after(m.exp, p.exp);
        let sign_before = after(m.minus | m.plus, p.minus | p.plus);
        let exp_two_before = (m.exp << 2) | (p.exp >> 62);
        let dot_before = after(m.dot, p.dot);
        let digit_after = before(m.digit, n.digit);
        let digit_or_sign_after = before(m.digit | m.minus | m.plus, n.digit | n.minus | n.plus);
        let digits_start = digit & !digit_before;
        let fraction = digits_start & dot_before;
        let exponent = digits_start & (exp_before | (sign_before & exp_two_before));
        let integer = digits_start & !fraction & !exponent;
        let past_integer = int_run.add(digit, integer) & !digit;
        let past_fraction = fraction_run.add(digit, fraction) & !digit;
        let past_exponent = exponent_run.add(digit, exponent) & !digit;
        faults |= (minus & !start & !exp_before)
            | (plus & !exp_before)
            | ((minus | plus | dot) & !digit_after)
            | ((exp | dot) & !digit_before)
            | (exp & !digit_or_sign_after)
            | (start & !(digit | minus))
            | (integer & m.zero & digit_after)
            | (past_integer & number & !(dot | exp))
            | (past_fraction & number & !exp)
            | (past_exponent & number);
    }
    (faults == 0 && !(int_run.0 || fraction_run.0 || exponent_run.0)).then_some(())
}

/// Pass 4: the brackets matched one by one, which also tells what the bytes
/// after each are in; nothing but whitespace after the top-level object.
#[inline(always)]
fn brackets(b: &[u8], blocks: &[Block], derived: &mut [Derived]) -> Option<()> {
    // The nesting, as in the scanner: one bit per open container, 1 for an object.
    let mut stack: u128 = 0;
    let mut depth = 0u32;
    // Whether the bytes after the last bracket are directly in an object, and
    // directly in the outermost one.
    let mut in_object = false;
    let mut in_top = false;
    // The top-level object's closing brace, once seen.
    let mut end: Option<usize> = None;
    for (word, (m, d)) in blocks.iter().zip(derived.iter_mut()).enumerate() {
        let base = word * 64;
        let outside = !(d.inside | m.quote);
        let mut brackets = m.bracket & outside;
        let (mut open_object, mut open_array, mut close) = (0u64, 0u64, 0u64);
        let (mut object_flips, mut top_flips) = (0u64, 0u64);
        let ones = |on: bool| if on { !0u64 } else { 0 };
        let (object_before, top_before) = (ones(in_object), ones(in_top));
        while brackets != 0 {
            let bit = brackets & brackets.wrapping_neg();
            let at = base + bit.trailing_zeros() as usize;
            if end.is_some() {
                return None;
            }
            match b[at] {
                b'{' | b'[' if depth == MAX_DEPTH => return None,
                b'{' => {
                    stack = (stack << 1) | 1;
                    depth += 1;
                    open_object |= bit;
                }
                b'[' => {
                    stack <<= 1;
                    depth += 1;
                    open_array |= bit;
                }
                c => {
                    if depth == 0 || (stack & 1 == 1) != (c == b'}') {
                        return None;
                    }
                    stack >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        end = Some(at);
                    } else {
                        close |= bit;
                    }
                }
            }
            let (object_now, top_now) = (depth > 0 && stack & 1 == 1, depth == 1);
            if object_now != in_object {
                object_flips |= bit;
                in_object = object_now;
            }
            if top_now != in_top {
                top_flips |= bit;
                in_top = top_now;
            }
            brackets &= brackets - 1;
        }
        // After the top-level object, only whitespace (the padding is some).
        if let Some(at) = end {
            let after_end = match at.checked_sub(base) {
                Some(bit) => (!0u64 << 1) << bit,
                None => !0,
            };
            if after_end & !m.ws != 0 {
                return None;
            }
        }
        let object = prefix_xor(object_flips) ^ object_before;
        let comma = m.comma & outside;
        d.open_object = open_object;
        d.open_array = open_array;
        d.close = close;
        d.colon = m.colon & outside;
        d.object_comma = comma & object;
        d.array_comma = comma & !object;
        d.top = prefix_xor(top_flips) ^ top_before;
    }
    end.map(|_| ())
}

/// Pass 5: the order of tokens; answers where the last top-level key named
/// `field` starts, if asked. `SPACED`: see [`Next`].
#[inline(always)]
fn order<const SPACED: bool>(
    b: &[u8],
    blocks: &[Block],
    derived: &[Derived],
    field: Option<&str>,
) -> Option<Option<usize>> {
    let mut last_key = None;
    let (mut after_open_object, mut after_open_array) = (Next::default(), Next::default());
    let (mut after_colon, mut after_object_comma, mut after_array_comma) =
        (Next::default(), Next::default(), Next::default());
    let (mut after_key, mut after_value) = (Next::default(), Next::default());
    let mut key_end = Carry::default();
    let mut faults = 0u64;
    for (word, (m, d)) in blocks.iter().zip(derived).enumerate() {
        let outside = !(d.inside | m.quote);
        let open_quote = m.quote & d.inside;
        let closing_quote = m.quote & !d.inside;
        let ws = m.ws & outside;
        let value_start = d.open_object | d.open_array | open_quote | d.run_start;
        let next_object = after_open_object.of::<SPACED>(d.open_object, ws);
        let next_array = after_open_array.of::<SPACED>(d.open_array, ws);
        let next_colon = after_colon.of::<SPACED>(d.colon, ws);
        let next_object_comma = after_object_comma.of::<SPACED>(d.object_comma, ws);
        let next_array_comma = after_array_comma.of::<SPACED>(d.array_comma, ws);
        // Keys are the strings after `{` and after a comma in an object; every
        // other string is a value.
        let keys = (next_object | next_object_comma) & open_quote;
        let keys_end = key_end.add(d.inside, keys) & !d.inside;
        let next_key = after_key.of::<SPACED>(keys_end, ws);
        let value_end = (closing_quote & !keys_end) | d.close;
        let ended = after(value_end, after_value.earlier) | d.after_run;
        after_value.earlier = value_end;
        let next_value = after_value.from::<SPACED>(ended, ws);
        let close = d.close | (m.bracket & outside & !(d.open_object | d.open_array));
        faults |= (next_object & !(open_quote | close))
            | (next_object_comma & !open_quote)
            | ((next_colon | next_array_comma) & !value_start)
            | (next_array & !(value_start | close))
            | (next_key & !d.colon)
            | (next_value & !(m.comma & outside | close));

        if let Some(field) = field {
            let mut candidates = keys & d.top;
            while candidates != 0 {
                let at = word * 64 + candidates.trailing_zeros() as usize;
                let key = &b[at + 1..];
                // Most keys differ in their first byte: one compare for them.
                if key.first() == field.as_bytes().first()
                    && key.starts_with(field.as_bytes())
                    && key.get(field.len()) == Some(&b'"')
                {
                    last_key = Some(at);
                }
                candidates &= candidates - 1;
            }
        }
    }
    let nexts = [
        &after_open_object,
        &after_open_array,
        &after_colon,
        &after_object_comma,
        &after_array_comma,
        &after_key,
        &after_value,
    ];
    if faults != 0 || key_end.0 || nexts.iter().any(|n| n.left()) {
        return None;
    }
    Some(last_key)
}

/// The bytes of a run of scalar characters (a number or a literal).
fn is_scalar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+')
}

/// Where the value after the key that ends just before `i` is, in a frame
/// already found well formed; `None` for a container (left to the scanner).
fn value_of(b: &[u8], mut i: usize) -> Option<std::ops::Range<usize>> {
    let skip = |mut i: usize| {
        while b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    i = skip(i) + 1; // the colon
    let start = skip(i);
    let end = match b[start] {
        b'{' | b'[' => return None,
        b'"' => start + 2 + b[start + 1..].iter().position(|&c| c == b'"')?,
        _ => {
            start
                + b[start..]
                    .iter()
                    .position(|&c| !is_scalar(c))
                    .unwrap_or(b.len() - start)
        }
    };
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_classifies_every_byte_as_the_reference_does() {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                std::arch::is_x86_feature_detected!("avx2"),
                "this CPU has no AVX2: the fast path is off here, and this test cannot run"
            );
            for first in (0..256).step_by(64) {
                let block: [u8; 64] = std::array::from_fn(|i| (first + i) as u8);
                // SAFETY: AVX2 is present, asserted above.
                let fast = unsafe { avx2::classify(&block) };
                assert_eq!(fast, classify_bytes(&block), "bytes {first}..");
            }
        }
    }
}
