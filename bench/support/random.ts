/**
 * Seeded randomness for benchmarks: the same seed gives the same ids and
 * the same traces on every run, so two runs differ only by the machine.
 */

/** sfc32 seeded through splitmix32: a fast generator of uint32 values. */
export function prng (seed: number): () => number {
  let s = seed >>> 0
  const split = (): number => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = split()
  let b = split()
  let c = split()
  let d = split()
  return () => {
    const t = (((a + b) >>> 0) + d) >>> 0
    d = (d + 1) >>> 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) >>> 0
    c = ((c << 21) | (c >>> 11)) >>> 0
    c = (c + t) >>> 0
    return t
  }
}

/** A uniform number in [0, 1) from a uint32 generator. */
export function uniform (next: () => number): () => number {
  return () => next() / 4294967296
}

const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1')

/** Writes `x` as 8 hex digits (`digits` of them, the high ones first) at `at`; returns the next position. */
function writeHex (out: Buffer, at: number, x: number, digits = 8): number {
  for (let shift = 28; shift > 28 - 4 * digits; shift -= 4) out[at++] = HEX_DIGITS[(x >>> shift) & 15]
  return at
}

const DASH = 0x2d

/**
 * Version 4 UUIDs from a seeded generator. `crypto.randomUUID()` costs about
 * 7 us a call on the benchmark VM, which would make a million-entry data set
 * take longer to build than to measure. Each id is a flat one-byte string
 * (as a decoded JWT claim or route param would be), written into a buffer,
 * not a rope of concatenations.
 */
export function uuids (seed: number): () => string {
  const next = prng(seed)
  const out = Buffer.alloc(36)
  return () => {
    const a = next()
    const b = (next() & 0xffff0fff) | 0x00004000
    const c = (next() & 0x3fffffff) | 0x80000000
    const d = next()
    let p = writeHex(out, 0, a)
    out[p++] = DASH
    p = writeHex(out, p, b, 4)
    out[p++] = DASH
    p = writeHex(out, p, b << 16, 4)
    out[p++] = DASH
    p = writeHex(out, p, c, 4)
    out[p++] = DASH
    p = writeHex(out, p, c << 16, 4)
    writeHex(out, p, d)
    return out.toString('latin1')
  }
}

/** Lowercase hex strings of the length asked for (tokens, tag names) from a seeded generator; flat, as `uuids` makes them. */
export function hexStrings (seed: number): (length: number) => string {
  const next = prng(seed)
  let out = Buffer.alloc(64)
  return (length) => {
    if (length > out.length) out = Buffer.alloc(length)
    for (let p = 0; p < length; p += 8) writeHex(out, p, next(), Math.min(8, length - p))
    return out.toString('latin1', 0, length)
  }
}

/** A shuffled copy (Fisher-Yates with a seeded generator). */
export function shuffled<T> (items: readonly T[], seed: number): T[] {
  const out = items.slice()
  const next = prng(seed)
  for (let i = out.length - 1; i > 0; i--) {
    const j = next() % (i + 1)
    const t = out[i]
    out[i] = out[j]
    out[j] = t
  }
  return out
}
