import { test } from 'tap'
import { AuthzCache } from '../lib/cache.js'
import { presets, resolveCacheOptions } from '../lib/options.js'
import { thrown } from './helpers.js'

test('presets give the SPEC values and explicit options win', async (t) => {
  const dev = resolveCacheOptions({})
  t.equal(dev.preset, 'development')
  t.equal(dev.maxEntries, 10_000)
  t.equal(dev.maxSizeMb, 64)
  t.equal(dev.compressionEnabled, false)
  t.equal(dev.targetAccessTimeMs, 5)
  const prod = resolveCacheOptions({ preset: 'production' })
  t.equal(prod.maxEntries, 50_000)
  t.equal(prod.maxSizeMb, 256)
  t.equal(prod.compressionEnabled, true)
  t.equal(prod.warmingEnabled, true)
  t.equal(prod.cleanupIntervalSeconds, 30)
  t.equal(prod.targetHitRatePercent, 97)
  t.same(Object.keys(presets), ['development', 'production'])
  const mixed = resolveCacheOptions({ preset: 'production', maxEntries: 7, compressionEnabled: false })
  t.equal(mixed.maxEntries, 7)
  t.equal(mixed.compressionEnabled, false)
  t.equal(mixed.maxSizeMb, 256)
})

test('bad options fail with FST_AUTHZ_OPTIONS naming the option', async (t) => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ preset: 'staging' }, 'preset'],
    [{ maxEntries: 0 }, 'maxEntries'],
    [{ maxEntries: 1.5 }, 'maxEntries'],
    [{ maxEntries: '100' }, 'maxEntries'],
    [{ maxSizeMb: 0 }, 'maxSizeMb'],
    [{ maxSizeMb: Infinity }, 'maxSizeMb'],
    [{ authTtlSeconds: -1 }, 'authTtlSeconds'],
    [{ negativeTtlSeconds: Number.NaN }, 'negativeTtlSeconds'],
    [{ uuidValidationTtlSeconds: 0 }, 'uuidValidationTtlSeconds'],
    [{ ttlJitterPercent: 60 }, 'ttlJitterPercent'],
    [{ targetAccessTimeMs: 0 }, 'targetAccessTimeMs'],
    [{ targetHitRatePercent: 101 }, 'targetHitRatePercent'],
    [{ compressionEnabled: 'yes' }, 'compressionEnabled'],
    [{ compressionThresholdBytes: -5 }, 'compressionThresholdBytes'],
    [{ warmingEnabled: 1 }, 'warmingEnabled'],
    [{ cleanupIntervalSeconds: -1 }, 'cleanupIntervalSeconds'],
    [{ loaderTimeoutMs: 0 }, 'loaderTimeoutMs'],
    [{ maxIdLength: 0 }, 'maxIdLength'],
    [{ now: 5 }, 'now'],
    [{ random: 'x' }, 'random'],
    [{ resolvers: [] }, 'resolvers'],
    [{ resolvers: { document: 'nope' } }, 'resolvers.document'],
    [{ resolvers: { 'bad:kind': async () => null } }, 'resolvers.bad:kind'],
    [{ resolvers: { gen: async () => null } }, 'resolvers.gen'],
    [{ resolvers: { user: async () => null } }, 'resolvers.user']
  ]
  for (const [options, name] of cases) {
    const error = thrown(t, () => new AuthzCache(options as never))
    t.equal(error.code, 'FST_AUTHZ_OPTIONS', `code for ${name}`)
    t.match(error.message, `Invalid option ${name}:`, `message names ${name}`)
  }
  t.throws(() => resolveCacheOptions(null as never), { code: 'FST_AUTHZ_OPTIONS' })
})
