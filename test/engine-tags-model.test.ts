/**
 * Tag invalidation against a model. The store finds an entry's own two tags
 * (`{kind}:{id}`, `user:{userId}`) through the index and per-user lists
 * rather than tag sets; a revocation by tag that missed an entry would leave
 * a grant behind. Random writes, evictions and invalidations (seeded; set
 * MODEL_SEED to replay) must leave exactly the keys the model keeps.
 */
import { test } from 'tap'
import fc from 'fast-check'
import { AuthzCache } from '../lib/cache.js'
import { keyBuilderFor, uuidValidationKey } from '../lib/keys.js'

const SEED = Number(process.env.MODEL_SEED ?? 42)
const USERS = ['u1', 'u2', 'u3']
const IDS = ['a', 'b', 'c']
const KINDS = ['generation', 'project', 'team', 'profile', 'document'] as const
const EXTRA = ['team:a', 'project:b', 'user:u2', 'org:x', 'generation:c']

type Op =
  | { op: 'set', kind: typeof KINDS[number], id: string, user: string, tags: string[] }
  | { op: 'uuid', id: string, context: string }
  | { op: 'tag', tag: string }
  | { op: 'user', user: string }
  | { op: 'key' }

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('set' as const), kind: fc.constantFrom(...KINDS), id: fc.constantFrom(...IDS), user: fc.constantFrom(...USERS), tags: fc.subarray(EXTRA, { maxLength: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('uuid' as const), id: fc.constantFrom(...IDS), context: fc.constantFrom(...USERS) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('tag' as const), tag: fc.oneof(fc.constantFrom(...EXTRA), fc.constantFrom(...KINDS).chain((k) => fc.constantFrom(...IDS, ...USERS).map((i) => `${k}:${i}`)), fc.constantFrom(...IDS, ...USERS).map((i) => `uuid:${i}`), fc.constantFrom(...USERS).map((u) => `context:${u}`)) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('user' as const), user: fc.constantFrom(...USERS) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'key' as const }) }
)

test('tag invalidation removes exactly what carries the tag, whichever index holds it', async (t) => {
  t.comment(`MODEL_SEED=${SEED}`)
  await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 60 }), fc.integer({ min: 4, max: 40 }), async (ops, maxEntries) => {
    const cache = new AuthzCache({ cleanupIntervalSeconds: 0, maxEntries, resolvers: { generation: async () => null, document: async () => null } })
    /** The model: key -> its tags; evictions are read back from the engine (which entries go is the policy's business). */
    const model = new Map<string, Set<string>>()
    try {
      for (const o of ops) {
        if (o.op === 'set') {
          const resource = o.kind === 'profile' ? o.user : o.id
          cache.set(o.kind, o.user, resource, { granted: true, tags: o.tags })
          model.set(keyBuilderFor(o.kind)(resource, o.user), new Set([`user:${o.user}`, `${o.kind}:${resource}`, ...o.tags]))
        } else if (o.op === 'uuid') {
          cache.setUuidValidation(o.id, o.context, { ok: true })
          model.set(uuidValidationKey(o.id, o.context), new Set([`uuid:${o.id}`, `context:${o.context}`]))
        } else if (o.op === 'key') {
          const key = [...model.keys()][0]
          if (key !== undefined) {
            cache.invalidateKeys([key])
            model.delete(key)
          }
        } else {
          const tag = o.op === 'user' ? `user:${o.user}` : o.tag
          const live = new Set(cache.keys())
          let expected = 0
          for (const [key, tags] of model) {
            if (!live.has(key)) model.delete(key)
            else if (tags.has(tag)) {
              model.delete(key)
              expected++
            }
          }
          const removed = o.op === 'user' ? cache.invalidateUserData(o.user) : cache.invalidateByTags([tag])
          if (removed !== expected) throw new Error(`${tag}: removed ${removed}, expected ${expected}`)
        }
        const live = cache.keys().sort()
        for (const key of live) if (!model.has(key)) throw new Error(`${key} survived an invalidation of one of its tags`)
        if (live.length > maxEntries) throw new Error('over maxEntries')
      }
    } finally {
      cache.close()
    }
  }), { seed: SEED, numRuns: 400 })
  t.pass('every invalidation removed exactly the entries carrying its tag')
})
