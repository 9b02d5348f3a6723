/**
 * Bounded fuzzing over real routes (fast-check, seeded; set FUZZ_SEED to
 * replay or explore). Whatever the Authorization header, route param or admin
 * body: no 5xx except the documented 503s, no 2xx without a grant, and a
 * refused admin request removes nothing.
 */
import { test } from 'tap'
import fc from 'fast-check'
import Fastify from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { buildApp } from './app.js'
import { G1, U1, U2 } from './helpers.js'
import type { Decision, ResolverContext } from '../lib/types.js'

const SEED = Number(process.env.FUZZ_SEED ?? 20261126)
const RUNS = 1500
const DOCUMENTED_503 = new Set(['FST_AUTHZ_RESOLVER_FAILED', 'FST_AUTHZ_RESOLVER_TIMEOUT', 'FST_AUTHZ_BUS_FAILED'])
/** The resolver throws for this id: the only way to a 503 here. */
const BOOM = 'boom'

/** The claims of a token we signed, or undefined: the oracle of who may get through. */
function verified (app: { jwt: { verify: (token: string) => unknown } }, authorization: string | undefined): Record<string, unknown> | undefined {
  const match = /^bearer (.+)$/i.exec(authorization ?? '')
  if (match === null) return undefined
  try {
    return app.jwt.verify(match[1]) as Record<string, unknown>
  } catch {
    return undefined
  }
}

function b64 (value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
}

test('fuzz: route params and Authorization headers never give a 5xx other than 503, nor a 2xx without a grant', async (t) => {
  t.comment(`FUZZ_SEED=${SEED}`)
  const table = new Map<string, Decision>([
    [`generation:${G1}:${U1}`, { granted: true, access: ['read'] }],
    [`project:${G1}:${U1}`, { granted: true, access: ['write'] }],
    [`generation:${G1}:${U2}`, { granted: false }]
  ])
  const resolve = async ({ kind, id, userId }: ResolverContext): Promise<Decision | null> => {
    if (id === BOOM) throw null // eslint-disable-line no-throw-literal
    return table.get(`${kind}:${id}:${userId}`) ?? null
  }
  const { app, token } = await buildApp(t, { maxIdLength: 64, resolvers: { generation: resolve, project: resolve } }, (a) => {
    a.get('/generations/:generationId/media', { config: { authz: { generation: 'generationId', access: 'read' } } }, async () => ({ ok: true }))
    a.post('/projects', { preHandler: a.authz.require({ project: (request) => (request.body as { projectId?: string } | null)?.projectId, access: 'write' }) }, async () => ({ ok: true }))
  })

  const other = Fastify()
  t.teardown(() => other.close())
  await other.register(fastifyJwt, { secret: 'some-other-secret-some-other-secret' })
  const subject = fc.oneof(fc.constantFrom(U1, U2, ''), fc.string({ maxLength: 80 }), fc.constant('x'.repeat(5000)))
  const header = fc.oneof(
    fc.constant(undefined),
    fc.string({ maxLength: 60 }),
    fc.string({ maxLength: 60 }).map((s) => `Bearer ${s}`),
    subject.map((sub) => `Bearer ${token(sub)}`),
    subject.map((sub) => `Bearer ${token(sub)}`.slice(0, -2) + 'xx'),
    subject.map((sub) => `Bearer ${other.jwt.sign({ sub })}`),
    subject.map((sub) => `Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub })}.`),
    fc.constant(`bearer ${token(U1)}`)
  )
  const param = fc.oneof(fc.constantFrom(G1, G1.toUpperCase(), BOOM, '%', '*', ':', '..', ' '), fc.string({ maxLength: 120 }), fc.string({ unit: 'grapheme', maxLength: 20 }))

  await fc.assert(fc.asyncProperty(header, param, fc.boolean(), async (authorization, id, viaBody) => {
    const headers: Record<string, string> = authorization === undefined ? {} : { authorization }
    const res = viaBody
      ? await app.inject({ method: 'POST', url: '/projects', headers, payload: { projectId: id } })
      : await app.inject({ url: `/generations/${encodeURIComponent(id)}/media`, headers })
    const body = res.body.length > 0 && String(res.headers['content-type'] ?? '').includes('json') ? res.json() : {}
    if (res.statusCode >= 500) {
      if (res.statusCode !== 503 || !DOCUMENTED_503.has(body.code)) throw new Error(`undocumented ${res.statusCode}: ${res.body}`)
    }
    if (res.statusCode < 300) {
      const granted = verified(app, authorization)?.sub === U1 && id === G1
      if (!granted) throw new Error(`2xx without a grant: ${JSON.stringify({ authorization, id, viaBody })}`)
    }
  }), { seed: SEED, numRuns: RUNS })
  t.pass(`${RUNS} requests held`)
  t.ok(app.authz.getStats().loaderErrors > 0, 'the throwing resolver was reached, so the 503 path was exercised')
})

test('fuzz: admin bodies and tokens: strict 400s, no 5xx, nothing removed unless an admin asked', async (t) => {
  t.comment(`FUZZ_SEED=${SEED}`)
  const { app, db, token } = await buildApp(t)
  const other = Fastify()
  t.teardown(() => other.close())
  await other.register(fastifyJwt, { secret: 'some-other-secret-some-other-secret' })
  const admin = (claims: Record<string, unknown>): string => token('ops', { scope: 'authz:admin', ...claims })
  const header = fc.oneof(
    fc.constant(undefined),
    fc.constant(`Bearer ${admin({})}`),
    fc.constant(`Bearer ${token('ops')}`),
    fc.constant(`Bearer ${other.jwt.sign({ sub: 'ops', scope: 'authz:admin' })}`),
    fc.constant(`Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'ops', scope: 'authz:admin' })}.`),
    fc.string({ maxLength: 40 }).map((s) => `Bearer ${s}`)
  )
  const field = fc.constantFrom('userId', 'generationId', 'projectId', 'teamId', 'tags', 'pattern', 'keys', 'all', '__proto__', 'constructor', 'extra')
  const body = fc.oneof(
    fc.anything({ maxDepth: 3 }),
    fc.dictionary(field, fc.oneof(fc.anything({ maxDepth: 2 }), fc.string({ maxLength: 30 }), fc.array(fc.string({ maxLength: 20 }), { maxLength: 3 }), fc.constant(true)), { maxKeys: 3 })
  )

  await fc.assert(fc.asyncProperty(header, body, async (authorization, payload) => {
    db.table.set(`generation:${G1}:${U1}`, { granted: true })
    await app.authz.getOrLoad('generation', U1, G1)
    const before = app.authz.getStats().totalEntries
    const headers: Record<string, string> = { 'content-type': 'application/json', ...(authorization === undefined ? {} : { authorization }) }
    const res = await app.inject({ method: 'POST', url: '/_authz/invalidate', headers, payload: JSON.stringify(payload) ?? 'null' })
    if (res.statusCode >= 500) throw new Error(`${res.statusCode}: ${res.body}`)
    const isAdmin = verified(app, authorization)?.scope === 'authz:admin'
    if (res.statusCode < 300 && !isAdmin) throw new Error(`2xx for a non-admin: ${authorization}`)
    if (res.statusCode >= 400 && app.authz.getStats().totalEntries !== before) throw new Error(`a refused request removed entries: ${res.body}`)
    if (res.statusCode === 400 && typeof res.json().message !== 'string') throw new Error('a 400 without a message')
  }), { seed: SEED, numRuns: RUNS })
  t.pass(`${RUNS} admin requests held`)
})
