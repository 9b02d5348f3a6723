import { test } from 'tap'
import fc from 'fast-check'
import { cachedFunctionKey, compilePattern, escapeKeySegment, keyBuilderFor, parseKey, stableSerialize, unescapeKeySegment } from '../lib/keys.js'
import { AuthzCache } from '../lib/cache.js'

const adversarial = fc.oneof(
  fc.string(),
  fc.string({ unit: 'grapheme' }),
  fc.constantFrom('', ':', '*', '%', '\\', '%3A', '%253A', 'a:b', 'a%3Ab', '*:*', 'user', ':user:', '\u0000', 'é', '🙂', '12345', '123456'),
  fc.array(fc.constantFrom(':', '*', '%', '3', 'A', '2', '5', 'a', 'user', '\\'), { maxLength: 8 }).map((parts) => parts.join(''))
)
const kinds = fc.constantFrom('generation', 'project', 'team', 'profile', 'document', 'workspace')

test('no two distinct (kind, id, user) triples share a key', async (t) => {
  const key = (kind: string, id: string, user: string): string => keyBuilderFor(kind)(id, user)
  fc.assert(fc.property(kinds, adversarial, adversarial, kinds, adversarial, adversarial, (k1, i1, u1, k2, i2, u2) => {
    // a profile key has no resource id: its identity is the user alone
    const same = k1 === k2 && u1 === u2 && (k1 === 'profile' || i1 === i2)
    return same === (key(k1, i1, u1) === key(k2, i2, u2))
  }), { numRuns: 20_000 })
  t.pass('20,000 adversarial pairs, no collision')
})

test('escaping keeps separators and wildcards out of every segment', async (t) => {
  fc.assert(fc.property(adversarial, (id) => {
    const escaped = escapeKeySegment(id)
    return !escaped.includes(':') && !escaped.includes('*') && decodeURIComponent(escaped.replace(/%(?![0-9A-F]{2})/g, '%25')) !== undefined
  }), { numRuns: 5000 })
  t.equal(escapeKeySegment('3f2a9c1e-7b4d'), '3f2a9c1e-7b4d', 'plain ids come back as they are')
  t.equal(escapeKeySegment('a:b*c%d'), 'a%3Ab%2Ac%25d')
})

test('a user pattern never touches another user whose id it prefixes', async (t) => {
  const pattern = compilePattern('auth:user:12345:*')
  t.ok(pattern.test('auth:user:12345:profile'))
  t.notOk(pattern.test('auth:user:123456:profile'))
  fc.assert(fc.property(adversarial, adversarial, (a, b) => {
    fc.pre(a !== b && a.length > 0 && b.length > 0)
    const p = compilePattern(`auth:user:${escapeKeySegment(a)}:*`)
    return !p.test(keyBuilderFor('profile')('', b)) && p.test(keyBuilderFor('profile')('', a))
  }), { numRuns: 10_000 })
  t.ok(compilePattern('auth:gen:*:user:u1:access').test('auth:gen:g1:user:u1:access'))
  t.notOk(compilePattern('auth:gen:*:user:u1:access').test('auth:gen:g1:user:u12:access'))
  t.ok(compilePattern('a.b(c)*').test('a.b(c)zzz'), 'regexp characters match themselves')
  t.notOk(compilePattern('a.b').test('axb'))
})

test('the engine invalidates by pattern with escaped ids', async (t) => {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: async () => null } })
  t.teardown(() => cache.close())
  cache.setUserProfile('12345', { granted: true })
  cache.setUserProfile('123456', { granted: true })
  cache.setUserProfile('a:b', { granted: true })
  cache.setGenerationAccess('g1', '12345', { granted: true })
  t.equal(cache.invalidateByPattern('auth:user:12345:*'), 1)
  t.equal(cache.getUserProfile('123456').hit, true)
  t.equal(cache.getGenerationAccess('g1', '12345').hit, true)
  t.equal(cache.invalidateByPattern(`auth:user:${escapeKeySegment('a:b')}:*`), 1)
  t.equal(cache.invalidateByPattern('auth:*:user:12345:*'), 1)
  t.equal(cache.getStats().totalEntries, 1)
})

test('stableSerialize ignores key order and tells types apart', async (t) => {
  t.equal(stableSerialize([{ b: 1, a: [2, { d: 3, c: 4 }] }]), stableSerialize([{ a: [2, { c: 4, d: 3 }], b: 1 }]))
  t.not(stableSerialize(['1']), stableSerialize([1]))
  t.not(stableSerialize([null]), stableSerialize([undefined]))
  t.not(stableSerialize([new Date(0)]), stableSerialize(['1970-01-01T00:00:00.000Z']), 'a Date is not its ISO string')
  t.equal(stableSerialize([10n]), '[10n]')
})

test('a key parses back to the (kind, id, user) that built it, and nothing else parses', async (t) => {
  fc.assert(fc.property(kinds, adversarial, adversarial, (kind, id, user) => {
    const key = keyBuilderFor(kind)(id, user)
    const address = parseKey(key)
    if (address === undefined) return false
    // a profile key has no resource id: the store indexes profiles by the user id
    return address.kind === kind && address.userId === user && address.id === (kind === 'profile' ? user : id)
  }), { numRuns: 20_000 })
  fc.assert(fc.property(fc.constantFrom('fn', 'a_b'), adversarial, (name, argumentsKey) => {
    const address = parseKey(cachedFunctionKey(name, argumentsKey))
    return address?.kind === `cached:${name}` && address.id === argumentsKey && address.userId === ''
  }), { numRuns: 5000 })
  // Hostile keys: parsing never throws, and a parsed id or user never holds a separator or a wildcard.
  fc.assert(fc.property(fc.oneof(adversarial, adversarial.map((s) => `auth:gen:${s}`), adversarial.map((s) => `auth:${s}:user:${s}:access`)), (key) => {
    const address = parseKey(key)
    return address === undefined || keyBuilderFor(address.kind)(address.id, address.userId).split(':').length === key.split(':').length
  }), { numRuns: 5000 })
  t.equal(unescapeKeySegment('a%3Ab%2Ac%25d'), 'a:b*c%d')
  t.equal(unescapeKeySegment('a%41'), undefined, 'no escape makes %41')
  t.equal(unescapeKeySegment('a%'), undefined)
  t.equal(parseKey('auth:gen:g:user:u:access:extra'), undefined)
  t.equal(parseKey('uuid:validation:abc:context:c'), undefined, 'uuid keys hold a hash, not the uuid')
})

test('exact-key invalidation finds the entry of every kind of key, and only a key that was built', async (t) => {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { document: async () => ({ granted: true }) } })
  t.teardown(() => cache.close())
  const odd = 'id:with*odd%chars'
  cache.setGenerationAccess(odd, 'u1', { granted: true })
  cache.setProjectAccess('p1', odd, { granted: true })
  cache.setUserProfile('u2', { name: 'x' })
  cache.set('document', 'u1', 'd1', { granted: true })
  cache.setUuidValidation('3f2a9c1e-7b4d-4c1a-9e8f-1a2b3c4d5e6f', 'ctx', true)
  const keys = cache.keys()
  t.equal(keys.length, 5)
  // Near misses that parse: a non-canonical escape, and an unknown kind.
  t.equal(await cache.invalidate({ keys: ['auth:gen:id%3Awith%2Aodd%25chars%41:user:u1:access', 'auth:nope:a:user:b:access', 'uuid:validation:00:context:ctx'] }), 0)
  t.equal(cache.getStats().totalEntries, 5)
  for (const [i, key] of keys.entries()) {
    t.equal(await cache.invalidate({ keys: [key] }), 1, key)
    t.equal(cache.getStats().totalEntries, 4 - i)
  }
})
