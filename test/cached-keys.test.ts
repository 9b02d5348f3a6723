import { test } from 'tap'
import fc from 'fast-check'
import { AuthzCache } from '../lib/cache.js'
import { escapeKeySegment, stableSerialize } from '../lib/keys.js'
import { fakeClock } from './helpers.js'

function engine (extra: Record<string, unknown> = {}): AuthzCache {
  return new AuthzCache({ cleanupIntervalSeconds: 0, ...extra })
}

const REFUSED = { code: 'FST_AUTHZ_OPTIONS', message: /options\.key/ }

/** A cached permission check whose answer depends on everything in its argument, counting its calls. */
function checker (cache: AuthzCache, answer: (arg: unknown) => boolean): { check: (arg: unknown) => Promise<{ granted: boolean }>, calls: () => number } {
  let calls = 0
  const check = cache.cached(async function permission (arg: unknown) {
    calls++
    return { granted: answer(arg) }
  })
  return { check, calls: () => calls }
}

test('cached(): two different Maps no longer share one answer', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const { check, calls } = checker(cache, (m) => (m as Map<string, string>).get('user') === 'A')
  await t.rejects(check(new Map([['user', 'A']])), REFUSED, 'user A: refused, asking for a key function')
  await t.rejects(check(new Map([['user', 'B']])), REFUSED, 'user B does not get A\'s { granted: true }')
  t.equal(calls(), 0, 'the function never ran on an argument the key cannot tell apart')
  const keyed = cache.cached(async function byMap (m: Map<string, string>) { return { granted: m.get('user') === 'A' } }, {
    key: (m: Map<string, string>) => JSON.stringify([...m])
  })
  t.same(await keyed(new Map([['user', 'A']])), { granted: true }, 'with a key function, Maps are cached')
  t.same(await keyed(new Map([['user', 'B']])), { granted: false })
})

test('cached(): new Set([1]) and new Set([2]) no longer share one answer', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const { check, calls } = checker(cache, (s) => (s as Set<number>).has(1))
  await t.rejects(check(new Set([1])), REFUSED)
  await t.rejects(check(new Set([2])), REFUSED)
  t.equal(calls(), 0)
})

test('cached(): NaN and null no longer share one answer', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const { check, calls } = checker(cache, (x) => x === null)
  t.same(await check(null), { granted: true })
  await t.rejects(check(NaN), REFUSED, 'NaN does not get null\'s answer')
  t.equal(calls(), 1)
})

test('cached(): Infinity and null no longer share one answer', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const { check } = checker(cache, (x) => x === null)
  t.same(await check(null), { granted: true })
  await t.rejects(check(Infinity), REFUSED)
  await t.rejects(check(-Infinity), REFUSED)
  await t.rejects(check({ limit: Infinity }), REFUSED, 'nested too')
})

test('cached(): two class instances with different private state no longer share one answer', async (t) => {
  class Session {
    readonly #user: string
    constructor (user: string) { this.#user = user }
    get user (): string { return this.#user }
  }
  const cache = engine()
  t.teardown(() => cache.close())
  const { check, calls } = checker(cache, (s) => (s as Session).user === 'A')
  await t.rejects(check(new Session('A')), { ...REFUSED, message: /a Session \(at arguments\[0\]\)/ })
  await t.rejects(check(new Session('B')), REFUSED)
  t.equal(calls(), 0)
})

test('cached(): two closures with the same source no longer share one answer', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const isUser = (name: string) => (user: string): boolean => user === name
  const { check, calls } = checker(cache, (f) => (f as (u: string) => boolean)('A'))
  await t.rejects(check(isUser('A')), { ...REFUSED, message: /a function/ })
  await t.rejects(check(isUser('B')), REFUSED)
  t.equal(calls(), 0)
})

test('cached(): a Date and its ISO string no longer share one answer', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const { check, calls } = checker(cache, (x) => x instanceof Date)
  t.same(await check(new Date(0)), { granted: true })
  t.same(await check('1970-01-01T00:00:00.000Z'), { granted: false }, 'the string gets its own answer')
  t.same(await check(new Date(0)), { granted: true }, 'an equal Date shares the first answer')
  t.equal(calls(), 2)
  await t.rejects(check(new Date(NaN)), REFUSED, 'an invalid Date is refused')
})

test('cached(): -0 and 0, undefined and null, { a: undefined } and {} no longer share one answer', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const pairs: Array<[unknown, unknown]> = [
    [-0, 0],
    [undefined, null],
    [[undefined], [null]],
    [{ a: undefined }, {}],
    [{ a: undefined }, { a: null }],
    [1n, 1],
    ['1', 1],
    [[1, 2], { 0: 1, 1: 2 }],
    [true, 'true']
  ]
  for (const [a, b] of pairs) {
    let calls = 0
    const seen = cache.cached(async (x: unknown) => { calls++; return { granted: true, seen: typeof x } })
    await seen(a)
    await seen(b)
    t.equal(calls, 2, `${stableSerialize([a])} and ${stableSerialize([b])} are two calls`)
    await seen(a)
    t.equal(calls, 2, 'and each is a hit the second time')
  }
  const args = cache.cached(async (...xs: unknown[]) => xs.length)
  t.equal(await args(), 0)
  t.equal(await args(undefined), 1, 'f() and f(undefined) are two argument lists')
})

test('cached(): arguments the key cannot represent are refused with FST_AUTHZ_OPTIONS asking for a key function', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  let calls = 0
  const fn = cache.cached(async function anything (..._args: unknown[]) { calls++; return { granted: true } })
  const cyclic: Record<string, unknown> = { a: 1 }
  cyclic.self = cyclic
  const sparse = [1, , 3] // eslint-disable-line no-sparse-arrays
  const extra = Object.assign([1, 2], { admin: true })
  const hidden = Object.defineProperty({}, 'user', { value: 'A', enumerable: false })
  const refused: Array<[string, unknown]> = [
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['a function', () => 1],
    ['a symbol', Symbol('x')],
    ['a Map', new Map()],
    ['a Set', new Set()],
    ['a WeakMap', new WeakMap()],
    ['a class instance', new (class User { name = 'A' })()],
    ['a boxed string', Object('A')],
    ['a boxed number', Object(1)],
    ['a typed array', new Uint8Array([1])],
    ['a Buffer', Buffer.from('A')],
    ['a RegExp', /a/],
    ['a Promise', Promise.resolve(1)],
    ['an Error', new Error('A')],
    ['a cycle', cyclic],
    ['a sparse array', sparse],
    ['an array with extra properties', extra],
    ['an object with symbol keys', { [Symbol('k')]: 1 }],
    ['a non-enumerable property', hidden],
    ['an invalid Date', new Date('nope')],
    ['a Date with extra properties', Object.assign(new Date(0), { user: 'A' })],
    ['an object posing as a Date', Object.create(Date.prototype)],
    ['an array subclass', new (class Ids extends Array {})()]
  ]
  for (const [what, value] of refused) {
    await t.rejects(fn('u1', { nested: [value] }), { code: 'FST_AUTHZ_OPTIONS', message: /arguments\[1\]\.nested\[0\].*options\.key/ }, what)
  }
  t.equal(calls, 0, 'the function never ran')
  t.throws(() => stableSerialize([new Map()]), { code: 'FST_AUTHZ_OPTIONS' }, 'stableSerialize itself throws')
})

test('cached(): a sub-object referenced twice is not a cycle', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const shared = { team: 't1' }
  let calls = 0
  const fn = cache.cached(async function twice (_a: unknown, _b: unknown) { calls++; return { granted: true } })
  t.same(await fn(shared, [shared, { shared }]), { granted: true })
  t.same(await fn({ team: 't1' }, [{ team: 't1' }, { shared: { team: 't1' } }]), { granted: true })
  t.equal(calls, 1, 'equal structures share one entry')
  t.equal(stableSerialize([{ b: 1, a: [2, { d: 3, c: 4 }] }]), stableSerialize([{ a: [2, { c: 4, d: 3 }], b: 1 }]), 'key order does not matter')
  t.equal(stableSerialize([Object.assign(Object.create(null), { a: 1 })]), stableSerialize([{ a: 1 }]), 'null-prototype objects are plain objects')
})

// --- the default key is injective: it reads back to the value it was made from

/** Reads a key made by stableSerialize back into a value (the test's proof that no two values share a key). */
function decode (text: string): unknown {
  let i = 0
  const expect = (s: string): void => {
    if (!text.startsWith(s, i)) throw new Error(`expected ${s} at ${i} in ${text}`)
    i += s.length
  }
  const value = (): unknown => {
    const c = text[i]
    if (c === '"') {
      let j = i + 1
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1
      const s = JSON.parse(text.slice(i, j + 1))
      i = j + 1
      return s
    }
    if (c === '[') {
      i++
      const out: unknown[] = []
      while (text[i] !== ']') {
        if (out.length > 0) expect(',')
        out.push(value())
      }
      i++
      return out
    }
    if (c === '{') {
      i++
      const out: Record<string, unknown> = {}
      let first = true
      while (text[i] !== '}') {
        if (!first) expect(',')
        first = false
        const k = value() as string
        expect(':')
        Object.defineProperty(out, k, { value: value(), enumerable: true, writable: true, configurable: true })
      }
      i++
      return out
    }
    for (const [word, v] of [['true', true], ['false', false], ['null', null], ['undefined', undefined]] as const) {
      if (text.startsWith(word, i)) {
        i += word.length
        return v
      }
    }
    if (text.startsWith('Date(', i)) {
      i += 5
      const end = text.indexOf(')', i)
      const d = new Date(Number(text.slice(i, end)))
      i = end + 1
      return d
    }
    let end = i
    while (end < text.length && !',]}'.includes(text[end])) end++
    const token = text.slice(i, end)
    i = end
    if (token.endsWith('n')) return BigInt(token.slice(0, -1))
    const n = Number(token)
    if (token === '' || Number.isNaN(n) || String(n) !== token.replace(/^-0$/, '0')) throw new Error(`bad number ${token}`)
    return token === '-0' ? -0 : n
  }
  const out = value()
  if (i !== text.length) throw new Error(`trailing text at ${i} in ${text}`)
  return out
}

/** Structural equality: what a function of these arguments can tell apart (-0 from 0, undefined from missing, Date from string). */
function same (a: unknown, b: unknown): boolean {
  if (typeof a !== typeof b) return false
  if (a === null || b === null || typeof a !== 'object') return Object.is(a, b)
  if (a instanceof Date || b instanceof Date) return a instanceof Date && b instanceof Date && a.getTime() === b.getTime()
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const ka = Object.keys(a as object).sort()
  const kb = Object.keys(b as object).sort()
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}

const tricky = fc.string({ unit: fc.constantFrom('a', '"', '\\', ',', ':', '[', ']', '{', '}', 'n', 'u', '(', ')', '0', '-', '\ud800'), maxLength: 4 })
const { tree } = fc.letrec((tie) => ({
  tree: fc.oneof({ depthSize: 'small', withCrossShrink: true },
    tricky,
    fc.constantFrom(0, -0, 1, -1, 0.1, 1e21, 1e-7, Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 53),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.bigInt({ min: -3n, max: 3n }),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.date({ noInvalidDate: true }),
    fc.array(tie('tree'), { maxLength: 3 }),
    fc.dictionary(tricky, tie('tree'), { maxKeys: 3 })
  )
}))
const argLists = fc.array(tree, { maxLength: 3 })

test('cached(): the default key is injective (fast-check, fixed seed)', async (t) => {
  const seed = 8_2024
  t.doesNotThrow(() => fc.assert(fc.property(argLists, (args) => same(decode(stableSerialize(args)), args)), { seed, numRuns: 10_000 }),
    `every key reads back to its argument list, so no two lists share one (seed ${seed})`)
  t.doesNotThrow(() => fc.assert(fc.property(argLists, argLists, (a, b) => same(a, b) === (stableSerialize(a) === stableSerialize(b))), { seed, numRuns: 10_000 }),
    `distinct argument lists get distinct keys, equal ones one key (seed ${seed})`)
  t.doesNotThrow(() => fc.assert(fc.property(argLists, (a) => stableSerialize(a) === stableSerialize(structuredClone(a))), { seed, numRuns: 2000 }),
    `a structural copy gets the same key (seed ${seed})`)
})

// --- kind and ttlSeconds

test('cached(): an anonymous function no longer throws: it gets a kind of its own', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const one = cache.cached(async () => 1)
  const two = cache.cached(async () => 2)
  t.equal(await one(), 1)
  t.equal(await two(), 2, 'two anonymous functions never share entries')
  const kinds = Object.keys(cache.getStats().byKind).filter((k) => k.startsWith('cached:anonymous-'))
  t.equal(kinds.length, 2)
  const bound = cache.cached(async function named (this: unknown) { return this === null ? 3 : 4 }.bind(null))
  t.equal(await bound(), 3, 'a bound function ("bound named" is no kind name) gets one too')

  const other = engine()
  t.teardown(() => other.close())
  other.cached(async function taken () { return 'taken' }, { kind: 'anonymous-1' })
  const [anonymous] = [async () => 'mine']
  t.equal(await other.cached(anonymous)(), 'mine', 'a made-up kind never takes one already in use')
  t.ok(Object.keys(other.getStats().byKind).includes('cached:anonymous-2'))
})

test('cached(): the same anonymous function wrapped twice keeps one kind', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  let calls = 0
  // An array element: no name is inferred for it.
  const [fn] = [async (id: string): Promise<string> => { calls++; return id }]
  t.equal(fn.name, '')
  const a = cache.cached(fn)
  const b = cache.cached(fn)
  await a('x')
  await b('x')
  t.equal(calls, 1, 'the second wrapper hits the first one\'s entry')
  t.equal(Object.keys(cache.getStats().byKind).filter((k) => k.startsWith('cached:anonymous-')).length, 1)
  t.equal(cache.invalidateByPattern('cached:anonymous-*'), 1)
})

test('cached(): a named function keeps its name as kind, and two functions never share one', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const quota = cache.cached(async function quota (id: string) { return { granted: true, id } })
  await quota('u1')
  t.same(cache.keys(), [`cached:quota:${escapeKeySegment('["u1"]')}`], 'keyed by its name')
  t.throws(() => cache.cached(async function quota () { return 2 }), { code: 'FST_AUTHZ_OPTIONS' }, 'another function named quota needs a kind of its own')
  t.throws(() => cache.cached(async () => 1, { kind: 'Not a kind' }), { code: 'FST_AUTHZ_OPTIONS' })
})

test('cached(): ttlSeconds is the TTL of denials too, not negativeTtlSeconds', async (t) => {
  const clock = fakeClock()
  const cache = engine({ now: clock.now, random: () => 0, authTtlSeconds: 600, negativeTtlSeconds: 10 })
  t.teardown(() => cache.close())
  let calls = 0
  const check = cache.cached(async function isMember (userId: string) { calls++; return { granted: userId === 'u1', ttlSeconds: 1 } }, { ttlSeconds: 60 })
  t.same(await check('u2'), { granted: false, ttlSeconds: 1 })
  await check('u1')
  clock.tick(30_000)
  await check('u2')
  await check('u1')
  t.equal(calls, 2, 'after 30 s (past negativeTtlSeconds and the result\'s own ttlSeconds) both are still cached')
  clock.tick(30_000)
  await check('u2')
  await check('u1')
  t.equal(calls, 4, 'at 60 s both expired')
  t.throws(() => cache.cached(async function isMember () { return 1 }), { code: 'FST_AUTHZ_OPTIONS' })
})

test('cached(): without ttlSeconds, results get the TTLs of resolver answers', async (t) => {
  const clock = fakeClock()
  const cache = engine({ now: clock.now, random: () => 0, authTtlSeconds: 600, negativeTtlSeconds: 10 })
  t.teardown(() => cache.close())
  let calls = 0
  async function isAdmin (userId: string): Promise<{ granted: boolean }> {
    calls++
    return { granted: userId === 'u1' }
  }
  const check = cache.cached(isAdmin)
  await check('u1')
  await check('u2')
  clock.tick(10_000)
  await check('u1')
  await check('u2')
  t.equal(calls, 3, 'the denial lived negativeTtlSeconds, the grant lives on')
})

test('cached(): wrapping a function again with another ttlSeconds is refused instead of silently keeping the first TTL', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  async function isOwner (userId: string): Promise<{ granted: boolean }> { return { granted: userId === 'u1' } }
  cache.cached(isOwner, { ttlSeconds: 60 })
  t.type(cache.cached(isOwner, { ttlSeconds: 60 }), 'function', 'wrapping it again with the same TTL is fine')
  t.throws(() => cache.cached(isOwner, { ttlSeconds: 5 }), { code: 'FST_AUTHZ_OPTIONS', message: /already cached with ttlSeconds 60/ })
  t.throws(() => cache.cached(isOwner), { code: 'FST_AUTHZ_OPTIONS', message: /already cached/ })
})
