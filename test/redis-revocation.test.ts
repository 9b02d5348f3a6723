/**
 * Regression tests for the revocation leaks of issue 10 (F1-F8), each named
 * after what broke, on a real Redis. Timing is forced by hooks around the
 * real client's commands (the command still runs on Redis), never by sleeps.
 */
import { test, type Test } from 'tap'
import { Redis } from 'ioredis'
import { AuthzCache } from '../lib/cache.js'
import type { ResolvedRedisOptions } from '../lib/options.js'
import { connectRedis } from '../lib/redis.js'
import { WRITE_SHA } from '../lib/redis-scripts.js'
import type { Decision } from '../lib/types.js'
import { deferred, type Deferred } from './helpers.js'
import { REDIS_URL, eventually, namespace, redisAvailable, resolvedRedis, silentLogger } from './redis-helpers.js'

type Ns = ReturnType<typeof namespace>

/** The "database" every instance's resolver reads; `gate` holds resolver calls until released. */
interface Db {
  rows: Map<string, Decision | null>
  gate: Deferred<void> | undefined
}

interface Instance {
  engine: AuthzCache
  client: Redis
  calls: number
  /** Runs after (or before) a command of this instance's client, on its way back: where a test puts its interleaving. */
  after: Map<string, () => Promise<void>>
}

async function instance (t: Test, ns: Ns, db: Db, redis: Partial<ResolvedRedisOptions> = {}): Promise<Instance> {
  const client = new Redis(REDIS_URL)
  const x: Instance = { engine: undefined as unknown as AuthzCache, client, calls: 0, after: new Map() }
  const evalsha = (client as unknown as { evalshaBuffer: (...args: unknown[]) => Promise<unknown> }).evalshaBuffer.bind(client) as (...args: unknown[]) => Promise<unknown>
  ;(client as unknown as { evalshaBuffer: (...args: unknown[]) => Promise<unknown> }).evalshaBuffer = async (...args: unknown[]) => {
    const reply = await evalsha(...args)
    const hook = x.after.get(String(args[0]))
    if (hook !== undefined) {
      x.after.delete(String(args[0]))
      await hook()
    }
    return reply
  }
  x.engine = new AuthzCache({
    cleanupIntervalSeconds: 0,
    ttlJitterPercent: 0,
    resolvers: {
      generation: async ({ id, userId }) => {
        x.calls++
        // The row as the query saw it when it ran; the answer arrives when the gate opens.
        const row = db.rows.get(`${id}:${userId}`) ?? null
        await db.gate?.promise
        return row
      }
    }
  })
  const layer = await connectRedis(x.engine, resolvedRedis(ns, { client, url: undefined, heartbeatMs: 200, ackTimeoutMs: 2000, ...redis }), silentLogger)
  t.teardown(async () => {
    x.engine.close()
    await layer.close()
    client.disconnect()
  })
  return x
}

const granted = (value: unknown): boolean => (value as Decision | undefined)?.granted === true
const read = async (x: Instance, g: string, u: string, fresh = false): Promise<boolean> => granted(await x.engine.getOrLoad('generation', u, g, { fresh }))

const available = await redisAvailable()
if (available === false) {
  test('revocation over Redis', { skip: `no Redis at ${REDIS_URL}` }, () => {})
} else {
  const setup = (t: Test): { ns: Ns, db: Db } => {
    const ns = namespace()
    t.teardown(ns.cleanup)
    return { ns, db: { rows: new Map(), gate: undefined } }
  }

  /** Two instances; A has cached g1:u1's grant, and the database has since revoked it (no invalidation yet). */
  const revokedAfterA = async (t: Test): Promise<{ ns: Ns, db: Db, a: Instance, b: Instance }> => {
    const { ns, db } = setup(t)
    const a = await instance(t, ns, db)
    const b = await instance(t, ns, db)
    db.rows.set('g1:u1', { granted: true })
    t.equal(await read(a, 'g1', 'u1'), true)
    db.rows.set('g1:u1', { granted: false })
    return { ns, db, a, b }
  }

  test('F1: a decision tag invalidated while its L2 write is on the wire no longer stays in L1', async (t) => {
    const { ns, db } = setup(t)
    const b = await instance(t, ns, db)
    db.rows.set('g1:u1', { granted: true, tags: ['project:p1'] })
    // The write script has run on Redis; before its answer reaches the load, the project is revoked.
    b.after.set(WRITE_SHA, async () => {
      db.rows.set('g1:u1', { granted: false })
      await b.engine.invalidate({ projectId: 'p1' })
    })
    t.equal(await read(b, 'g1', 'u1'), true, 'the load that raced the revocation answers its own caller')
    t.equal(b.engine.getGenerationAccess('g1', 'u1').hit, false, 'but stored nothing in L1: the full tag set fenced it')
    t.equal(await read(b, 'g1', 'u1'), false, 'the next read is denied')
    t.notMatch(String(await ns.raw.get(`${ns.keyPrefix}v:auth:gen:g1:user:u1:access`)), /"granted":true/, 'and L2 holds no grant')
  })

  test('F2: a pattern or `all` revocation is not undone by a read between its script and its SCAN', async (t) => {
    for (const request of [{ pattern: 'auth:gen:g1:*' }, { all: true }]) {
      const { ns, a, b } = await revokedAfterA(t)
      // Reads on the revoking instance and on another, while the L2 value is still there (SCAN not yet run).
      const seen: boolean[] = []
      const scan = a.client.scan.bind(a.client) as (...args: unknown[]) => Promise<[string, string[]]>
      ;(a.client as unknown as { scan: (...args: unknown[]) => Promise<[string, string[]]> }).scan = async (...args: unknown[]) => {
        if (seen.length === 0) {
          t.equal(await ns.raw.exists(`${ns.keyPrefix}v:auth:gen:g1:user:u1:access`), 1, 'the old value is still in L2')
          seen.push(await read(a, 'g1', 'u1'), await read(b, 'g1', 'u1'))
        }
        return await scan(...args)
      }
      await a.engine.invalidate(request)
      t.same(seen, [false, false], `${JSON.stringify(request)}: neither instance took the old L2 value`)
      t.equal(await read(b, 'g1', 'u1'), false)
    }
  })

  test('F3: a value orphaned from its tag sets (as a concurrent `all` leaves it) is still refused once its user is revoked', async (t) => {
    const { ns, db } = setup(t)
    const a = await instance(t, ns, db)
    db.rows.set('g1:u1', { granted: true })
    t.equal(await read(a, 'g1', 'u1'), true)
    // What the SCAN of an `all` did to writes that raced it: the value stays, its tag set is gone.
    await ns.raw.del(`${ns.keyPrefix}t:user:u1`, `${ns.keyPrefix}t:generation:g1`)
    db.rows.set('g1:u1', { granted: false })
    await a.engine.invalidateUserAuthorizationCache('u1')
    const fresh = await instance(t, ns, db)
    t.equal(await read(fresh, 'g1', 'u1'), false, 'an instance with an empty L1 does not get the orphan from L2')
    t.equal(fresh.calls, 1, 'it asked the database')
  })

  test('F4: an awaited revocation holds on the other instance at once (acknowledged)', async (t) => {
    const { ns, db } = setup(t)
    const a = await instance(t, ns, db)
    const b = await instance(t, ns, db)
    for (let round = 0; round < 50; round++) {
      const g = `g${round}`
      db.rows.set(`${g}:u1`, { granted: true })
      t.equal(await read(a, g, 'u1') && await read(b, g, 'u1'), true)
      db.rows.set(`${g}:u1`, { granted: false })
      const answer = await a.engine.invalidateEverywhere({ generationId: g })
      if (answer.acknowledged !== 2 || answer.instances !== 2) t.fail(`round ${round}: ${JSON.stringify(answer)}`)
      // No waiting: B applied it before A's await resolved.
      if (b.engine.getGenerationAccess(g, 'u1').hit) t.fail(`round ${round}: B still held the grant after A's await`)
      if (await read(b, g, 'u1')) t.fail(`round ${round}: B granted after A's await`)
    }
    t.pass('50 rounds')
  })

  test('F4: when L2 refuses a load\'s write, callers that joined it reload instead of taking the old answer', async (t) => {
    const { ns, db } = setup(t)
    const a = await instance(t, ns, db)
    // B hears no bus: only Redis knows of the revocation when B's write arrives.
    const b = await instance(t, ns, db, { bus: false })
    db.rows.set('g1:u1', { granted: true })
    db.gate = deferred()
    const first = read(b, 'g1', 'u1')
    t.ok(await eventually(() => b.calls === 1))
    db.rows.set('g1:u1', { granted: false })
    await a.engine.invalidateUserAuthorizationCache('u1')
    const joined = read(b, 'g1', 'u1')
    const gate = db.gate
    db.gate = undefined
    gate.resolve()
    t.equal(await first, true, 'the caller that started the load before the revocation gets its answer')
    t.equal(await joined, false, 'the caller that joined after it reloads and is denied')
    t.equal(b.calls, 2)
    t.equal(b.engine.getStats().redis?.refused, 1)
  })

  test('F5: set*() replaces the key in L2 and on every instance, and wins over every load in flight', async (t) => {
    const { ns, db } = setup(t)
    const a = await instance(t, ns, db)
    const b = await instance(t, ns, db)
    db.rows.set('g1:u1', { granted: true })
    t.equal(await read(a, 'g1', 'u1'), true)
    t.equal(await read(b, 'g1', 'u1'), true)
    a.engine.setGenerationAccess('g1', 'u1', { granted: false })
    t.ok(await eventually(() => !b.engine.getGenerationAccess('g1', 'u1').hit), 'B dropped its grant')
    const fresh = await instance(t, ns, db)
    t.equal(await read(fresh, 'g1', 'u1'), false, 'L2 holds the direct write')
    t.equal(fresh.calls, 0, 'read from L2, not the database')
  })

  test('F5: with L1 only, an older load that a `fresh` one replaced does not overwrite a direct write', async (t) => {
    let calls = 0
    const gate = deferred<void>()
    const engine = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: async () => { calls++; await gate.promise; return { granted: true } } } })
    t.teardown(() => engine.close())
    const older = engine.getOrLoad('generation', 'u1', 'g2')
    const newer = engine.getOrLoad('generation', 'u1', 'g2', { fresh: true })
    t.ok(await eventually(() => calls === 2), 'two loads in flight for one key')
    engine.setGenerationAccess('g2', 'u1', { granted: false })
    gate.resolve()
    await Promise.all([older, newer])
    t.equal(engine.getGenerationAccess('g2', 'u1').value?.granted, false, 'neither load overwrote the direct write')
  })

  test('F6: fresh: true skips L2 and asks the resolver', async (t) => {
    const { b } = await revokedAfterA(t)
    t.equal(await read(b, 'g1', 'u1', true), false, 'the fresh check reached the database')
    t.equal(b.calls, 1)
  })

  test('F8: an invalidation Redis did not take is applied here, queued, and delivered once Redis takes it', async (t) => {
    const { ns, db } = setup(t)
    const a = await instance(t, ns, db, { ackTimeoutMs: 200 })
    const b = await instance(t, ns, db)
    db.rows.set('g1:u1', { granted: true })
    t.equal(await read(a, 'g1', 'u1'), true)
    t.equal(await read(b, 'g1', 'u1'), true)
    // A's command connection refuses every script for a while (the subscriber is fine).
    let refusing = true
    const evalsha = (a.client as unknown as { evalshaBuffer: (...args: unknown[]) => Promise<unknown> }).evalshaBuffer.bind(a.client) as (...args: unknown[]) => Promise<unknown>
    ;(a.client as unknown as { evalshaBuffer: (...args: unknown[]) => Promise<unknown> }).evalshaBuffer = async (...args: unknown[]) => {
      if (refusing) throw new Error('connection lost')
      return await evalsha(...args)
    }
    db.rows.set('g1:u1', { granted: false })
    await t.rejects(a.engine.invalidateUserAuthorizationCache('u1'), { code: 'FST_AUTHZ_BUS_FAILED' }, 'the caller learns Redis did not take it')
    t.equal(a.engine.getGenerationAccess('g1', 'u1').hit, false, 'applied here at once')
    t.equal(a.engine.getStats().redis?.pending, 1, 'and queued')
    t.equal(await read(a, 'g1', 'u1'), false)
    refusing = false
    t.ok(await eventually(() => !b.engine.getGenerationAccess('g1', 'u1').hit, 5000), 'delivered to B once Redis took it')
    t.equal(await read(b, 'g1', 'u1'), false)
    t.equal(a.engine.getStats().redis?.pending, 0)
  })
}
