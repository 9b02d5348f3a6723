import { test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import authzCache from '../lib/index.js'
import { SECRET, buildApp } from './app.js'
import { G1, U1, U2 } from './helpers.js'

const ADMIN = { scope: 'read authz:admin' }

async function seeded (t: Parameters<typeof buildApp>[0], options = {}): ReturnType<typeof buildApp> {
  const built = await buildApp(t, options, (a) => {
    a.get('/generations/:generationId', { config: { authz: { generation: 'generationId', access: 'read' } } }, async () => ({ ok: true }))
  })
  built.db.table.set(`generation:${G1}:${U1}`, { granted: true, tags: ['project:p1'] })
  built.db.table.set(`generation:${G1}:${U2}`, { granted: true })
  return built
}

test('admin routes: 401 without a token, 403 without authz:admin', async (t) => {
  const { app, auth } = await seeded(t)
  for (const [method, url] of [['GET', '/_authz/stats'], ['POST', '/_authz/invalidate']] as const) {
    const none = await app.inject({ method, url, payload: method === 'POST' ? { all: true } : undefined })
    t.equal(none.statusCode, 401, `${method} ${url}`)
    t.equal(none.json().code, 'FST_AUTHZ_UNAUTHENTICATED')
    const user = await app.inject({ method, url, headers: auth(U1, { scope: 'read write' }), payload: method === 'POST' ? { all: true } : undefined })
    t.equal(user.statusCode, 403, `${method} ${url}`)
    t.equal(user.json().code, 'FST_AUTHZ_FORBIDDEN')
  }
  t.equal((await app.inject({ url: '/_authz/stats', headers: auth(U1, { scope: ['authz:admin'] }) })).statusCode, 200, 'scope as an array')
  t.equal((await app.inject({ url: '/_authz/stats', headers: auth(U1, { scope: 'authz:administrator' }) })).statusCode, 403, 'whole scopes only')
})

test('GET /_authz/stats answers the SPEC fields as JSON', async (t) => {
  const { app, auth } = await seeded(t)
  await app.inject({ url: `/generations/${G1}`, headers: auth(U1) })
  await app.inject({ url: `/generations/${G1}`, headers: auth(U1) })
  const res = await app.inject({ url: '/_authz/stats', headers: auth(U2, ADMIN) })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], 'application/json')
  const stats = res.json()
  t.same(Object.keys(stats).sort(), ['averageAccessTimeMs', 'batches', 'byKind', 'coalesced', 'eviction', 'evictions', 'expirations', 'hitRatePercent', 'hits', 'invalidations',
    'loaderErrors', 'loaderTimeouts', 'loads', 'maxEntries', 'maxSizeMb', 'misses', 'p99AccessTimeMs', 'performanceTargets', 'totalEntries', 'totalSizeMb', 'warming'].sort())
  t.same(Object.keys(stats.warming).sort(), ['bytes', 'predicted', 'used', 'wasted'])
  t.equal(stats.hits, 1)
  t.equal(stats.misses, 1)
  t.equal(stats.totalEntries, 1)
  t.same(stats.byKind.generation, { hits: 1, misses: 1, hitRatePercent: 50 })
  t.same(Object.keys(stats.eviction).sort(), ['admitted', 'policy', 'rejected', 'sketchBytes', 'sketchResets', 'windowEntries'])
  t.equal(stats.eviction.policy, 'tinylfu', 'the default policy')
  t.ok(stats.eviction.sketchBytes > 0 && stats.totalSizeMb * 1024 * 1024 >= stats.eviction.sketchBytes, 'the sketch is counted in totalSizeMb')
  t.same(Object.keys(stats.performanceTargets).sort(), ['meetingAccessTimeTarget', 'meetingHitRateTarget', 'targetAccessTimeMs', 'targetHitRatePercent'])
  t.notMatch(res.body, /eyJ/, 'no token in the stats')
})

test('GET /_authz/stats with Accept: text/plain answers Prometheus text', async (t) => {
  const { app, auth } = await seeded(t)
  await app.inject({ url: `/generations/${G1}`, headers: auth(U1) })
  const res = await app.inject({ url: '/_authz/stats', headers: { ...auth(U2, ADMIN), accept: 'text/plain' } })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], 'text/plain')
  t.match(res.body, '# TYPE authz_cache_hits_total counter\nauthz_cache_hits_total{kind="generation"} 0\n')
  t.match(res.body, 'authz_cache_misses_total{kind="generation"} 1\n')
  t.match(res.body, 'authz_cache_entries 1\n')
  t.match(res.body, 'authz_cache_loads_total 1\n')
  t.match(res.body, 'authz_cache_admission_duels_total{outcome="admitted"} 0\nauthz_cache_admission_duels_total{outcome="rejected"} 0\n')
  t.match(res.body, '# TYPE authz_cache_batches_total counter\nauthz_cache_batches_total 0\n')
  for (const name of ['predicted', 'used', 'wasted']) t.match(res.body, `# TYPE authz_cache_warming_${name}_total counter\nauthz_cache_warming_${name}_total 0\n`)
  t.match(res.body, /# TYPE authz_cache_warming_bytes gauge\nauthz_cache_warming_bytes \d+\n/)
  for (const line of res.body.trim().split('\n')) {
    t.match(line, /^(# (HELP|TYPE) authz_cache_\w+ .+|authz_cache_\w+(\{(kind|outcome)="\w+"\})? -?[0-9.e+-]+)$/, 'exposition format')
  }
})

test('POST /_authz/invalidate: by user, tags, pattern, keys, all; the next request reloads', async (t) => {
  const { app, db, auth } = await seeded(t)
  const warmUp = async (): Promise<void> => {
    await app.inject({ url: `/generations/${G1}`, headers: auth(U1) })
    await app.inject({ url: `/generations/${G1}`, headers: auth(U2) })
  }
  const invalidate = (payload: object): Promise<{ statusCode: number, json: () => any }> =>
    app.inject({ method: 'POST', url: '/_authz/invalidate', headers: auth('ops', ADMIN), payload })
  await warmUp()
  t.equal(db.calls.length, 2)
  const bodies: Array<[object, number]> = [
    [{ userId: U1 }, 1],
    [{ tags: ['project:p1'] }, 1],
    [{ pattern: `auth:gen:*:user:${U2}:*` }, 1],
    [{ keys: [`auth:gen:${G1}:user:${U1}:access`] }, 1],
    [{ generationId: G1 }, 2],
    [{ all: true }, 2],
    [{ userId: U1, projectId: 'p9', teamId: 't9' }, 1]
  ]
  let calls = 2
  for (const [body, removed] of bodies) {
    const res = await invalidate(body)
    t.equal(res.statusCode, 200, JSON.stringify(body))
    t.same(res.json(), { invalidated: removed, acknowledged: 1, instances: 1 }, JSON.stringify(body))
    await warmUp()
    calls += removed
    t.equal(db.calls.length, calls, `${JSON.stringify(body)}: only what was removed reloads`)
  }
})

test('POST /_authz/invalidate: 400 naming the field on every malformed body, and nothing is removed', async (t) => {
  const { app, auth } = await seeded(t)
  await app.inject({ url: `/generations/${G1}`, headers: auth(U1) })
  const cases: Array<[unknown, string]> = [
    [{}, 'at least one'],
    [{ userId: 42 }, 'body/userId'],
    [{ userId: '' }, 'body/userId'],
    [{ tags: 'x' }, 'body/tags'],
    [{ tags: [] }, 'body/tags'],
    [{ tags: [1] }, 'body/tags/0'],
    [{ keys: [''] }, 'body/keys/0'],
    [{ pattern: 5 }, 'body/pattern'],
    [{ pattern: '*a'.repeat(17) }, "body/pattern must hold at most 16 '*'"],
    [{ pattern: '********x'.repeat(3) }, "body/pattern must hold at most 16 '*'"],
    [{ pattern: 'a'.repeat(1025) }, 'body/pattern'],
    [{ all: false }, 'body/all'],
    [{ all: 'true' }, 'body/all'],
    [{ userId: U1, user: U1 }, 'body/user is not an allowed field'],
    [[{ userId: U1 }], 'body must be object'],
    ['userId', 'body']
  ]
  for (const [payload, field] of cases) {
    const res = await app.inject({
      method: 'POST',
      url: '/_authz/invalidate',
      headers: { ...auth('ops', ADMIN), 'content-type': 'application/json' },
      payload: JSON.stringify(payload)
    })
    t.equal(res.statusCode, 400, JSON.stringify(payload))
    t.match(res.json().message, field, JSON.stringify(payload))
    if (typeof payload === 'object') t.equal(res.json().code, 'FST_AUTHZ_BAD_INVALIDATION')
  }
  t.equal(app.authz.getStats().totalEntries, 1, 'nothing was removed')
})

test('admin options: prefix, a custom authorize, or none at all', async (t) => {
  const custom = await seeded(t, { admin: { prefix: '/ops/cache/', authorize: async (request: { headers: Record<string, unknown> }) => request.headers['x-ops'] === 'yes' } })
  t.equal((await custom.app.inject({ url: '/ops/cache/stats', headers: { 'x-ops': 'yes' } })).statusCode, 200)
  t.equal((await custom.app.inject({ url: '/ops/cache/stats' })).statusCode, 403)
  t.equal((await custom.app.inject({ url: '/_authz/stats', headers: { 'x-ops': 'yes' } })).statusCode, 404)
  const none = await seeded(t, { admin: false })
  t.equal((await none.app.inject({ url: '/_authz/stats', headers: none.auth(U1, ADMIN) })).statusCode, 404)
})

test('the default admin guard verifies the JWT even when authenticate is false for route checks', async (t) => {
  const built = await buildApp(t, { authenticate: false })
  const forged = { authorization: 'Bearer not-a-token' }
  t.equal((await built.app.inject({ url: '/_authz/stats', headers: forged })).statusCode, 401)
  t.equal((await built.app.inject({ url: '/_authz/stats', headers: built.auth('ops', ADMIN) })).statusCode, 200)
  t.equal((await built.app.inject({ url: '/_authz/stats', headers: built.auth('ops') })).statusCode, 403)
})

/** authenticate: false, and an earlier hook that sets `request.user` by `hook` (registered before the plugin). */
async function trustingApp (t: Parameters<typeof buildApp>[0], hook: (app: FastifyInstance, request: FastifyRequest) => Promise<void>): Promise<FastifyInstance> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: SECRET })
  app.addHook('onRequest', async (request) => { await hook(app, request) })
  await app.register(authzCache, { authenticate: false, cleanupIntervalSeconds: 0, resolvers: { generation: async () => ({ granted: true }) } })
  await app.ready()
  return app
}

test('admin guard: an earlier hook that sets request.user from an unverified token does not open the admin routes', async (t) => {
  // The hostile shape: the hook only decodes the token (no signature check).
  const app = await trustingApp(t, async (app, request) => {
    const header = request.headers.authorization
    if (header !== undefined) (request as { user?: unknown }).user = app.jwt.decode(header.slice(7))
  })
  const payload = Buffer.from(JSON.stringify({ sub: 'mallory', scope: 'authz:admin' })).toString('base64url')
  const algNone = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`
  const other = Fastify()
  t.teardown(() => other.close())
  await other.register(fastifyJwt, { secret: 'a-different-secret-a-different-secret' })
  const wrongSecret = other.jwt.sign({ sub: 'mallory', scope: 'authz:admin' })
  await app.authz.getOrLoad('generation', U1, G1)
  for (const [name, token] of [['alg none', algNone], ['wrong secret', wrongSecret]]) {
    const res = await app.inject({ method: 'POST', url: '/_authz/invalidate', payload: { all: true }, headers: { authorization: `Bearer ${token}` } })
    t.equal(res.statusCode, 401, name)
    t.equal(res.json().code, 'FST_AUTHZ_UNAUTHENTICATED', name)
    t.equal((await app.inject({ url: '/_authz/stats', headers: { authorization: `Bearer ${token}` } })).statusCode, 401, `${name}: stats`)
  }
  t.equal(app.authz.getStats().totalEntries, 1, 'nothing was invalidated')
  const real = await app.inject({ method: 'POST', url: '/_authz/invalidate', payload: { all: true }, headers: { authorization: `Bearer ${app.jwt.sign({ sub: 'ops', ...ADMIN })}` } })
  t.equal(real.statusCode, 200, 'a real admin is not locked out')
  t.equal(real.json().invalidated, 1)
})

test('admin guard: a real admin token still works when an earlier hook already verified it', async (t) => {
  const app = await trustingApp(t, async (_app, request) => { await request.jwtVerify().catch(() => {}) })
  t.equal((await app.inject({ url: '/_authz/stats', headers: { authorization: `Bearer ${app.jwt.sign({ sub: 'ops', ...ADMIN })}` } })).statusCode, 200)
  t.equal((await app.inject({ url: '/_authz/stats', headers: { authorization: `Bearer ${app.jwt.sign({ sub: 'ops' })}` } })).statusCode, 403)
  t.equal((await app.inject({ url: '/_authz/stats' })).statusCode, 401)
})

test('GET /_authz/stats: media types match case-insensitively (TEXT/PLAIN got JSON)', async (t) => {
  const { app, auth } = await seeded(t)
  for (const accept of ['TEXT/PLAIN', 'Text/Plain; version=0.0.4', 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1']) {
    const res = await app.inject({ url: '/_authz/stats', headers: { ...auth(U2, ADMIN), accept } })
    t.match(res.headers['content-type'], 'text/plain', accept)
    t.match(res.body, '# TYPE authz_cache_hits_total counter', accept)
  }
  for (const accept of ['APPLICATION/JSON', 'application/json, text/plain;q=0.5', '*/*']) {
    const res = await app.inject({ url: '/_authz/stats', headers: { ...auth(U2, ADMIN), accept } })
    t.match(res.headers['content-type'], 'application/json', accept)
  }
})

test('Prometheus: no series mixes an unlabelled total with per-kind labels, so sum() does not double-count', async (t) => {
  const { app, auth } = await seeded(t)
  await app.inject({ url: `/generations/${G1}`, headers: auth(U1) })
  await app.inject({ url: `/generations/${G1}`, headers: auth(U1) })
  const res = await app.inject({ url: '/_authz/stats', headers: { ...auth(U2, ADMIN), accept: 'text/plain' } })
  const samples = res.body.split('\n').filter((line) => line !== '' && !line.startsWith('#'))
  const byName = new Map<string, string[]>()
  for (const line of samples) {
    const name = line.split(/[{ ]/)[0]
    byName.set(name, [...(byName.get(name) ?? []), line])
  }
  for (const [name, lines] of byName) {
    const labelled = lines.filter((line) => line.includes('{'))
    t.ok(labelled.length === 0 || labelled.length === lines.length, `${name}: all labelled or none`)
  }
  const sum = (name: string): number => (byName.get(name) ?? []).reduce((total, line) => total + Number(line.split(' ').pop()), 0)
  t.equal(sum('authz_cache_hits_total'), 1, 'sum() over kinds is the total')
  t.equal(sum('authz_cache_misses_total'), 1)
})
