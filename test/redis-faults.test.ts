/**
 * Fault injection against the Redis layer: instance A talks to Redis
 * directly, instance B through a TCP proxy of its own (test/tcp-proxy.ts)
 * that freezes, cuts or refuses its traffic; a private redis-server is
 * killed and restarted. For each fault, the time from the revocation (or
 * from Redis coming back) until the instance denies is measured by polling
 * its reads, and checked against the SPEC bound of 5 s
 * (`busOutageMaxStalenessSeconds`, default 5).
 *
 * How the bound is checked: reads are polled every POLL_MS, plus one read
 * right at the bound, so the first read past the bound is never a poll late.
 * The hard check is that no read starting at or past the bound was granted;
 * the measured time (start of the first denying read) is then within
 * BOUND_MS plus the poll resolution. The measured times are printed with
 * t.comment.
 */
import { test, type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import type { FastifyInstance } from 'fastify'
import { buildApp, type TestApp } from './app.js'
import { G1, G2, U1, U2 } from './helpers.js'
import { REDIS_URL, eventually, namespace, redisAvailable } from './redis-helpers.js'
import { startProxy, type ConnectionInfo, type TcpProxy } from './tcp-proxy.js'
import type { Decision, RedisStats } from '../lib/types.js'

/** The SPEC bound: a revocation holds on every instance within this (busOutageMaxStalenessSeconds, default 5). */
const BOUND_MS = 5000
/** How often the reads are polled. */
const POLL_MS = 50
/** Polling gives up after this (a failure, not a measurement). */
const GIVE_UP_MS = 15_000
const REDIS_SERVER = '/usr/bin/redis-server'
/** Fast liveness for the tests; busOutageMaxStalenessSeconds stays at its default (5). */
const FAST = { heartbeatMs: 200, commandTimeoutMs: 100 }

const isSubscriber = (c: ConnectionInfo): boolean => /subscribe/i.test(c.clientBytes)

const routes = (app: FastifyInstance): void => {
  app.get('/generations/:generationId', { config: { authz: { generation: 'generationId', access: 'read' } } }, async () => ({ ok: true }))
}

const get = (x: TestApp, generationId = G1, user = U1): Promise<number> =>
  x.app.inject({ url: `/generations/${generationId}`, headers: x.auth(user) }).then((r) => r.statusCode)

const admin = (x: TestApp): { authorization: string } => x.auth('ops', { scope: 'authz:admin' })

const redis = (x: TestApp): RedisStats => x.app.authz.getStats().redis as RedisStats

interface Names { keyPrefix: string, channel: string }

/** An instance with the fast liveness settings, on `url` (Redis itself or a proxy), sharing `table` (the database). */
function instance (t: Test, url: string, names: Names, table: Map<string, Decision | null>): Promise<TestApp> {
  return buildApp(t, { redis: { url, keyPrefix: names.keyPrefix, channel: names.channel, ...FAST } }, routes, table)
}

async function proxyTo (t: Test, target: { host: string, port: number }): Promise<TcpProxy> {
  const proxy = await startProxy(target)
  t.teardown(() => proxy.close())
  return proxy
}

const defaultTarget = (): { host: string, port: number } => {
  const url = new URL(REDIS_URL)
  return { host: url.hostname, port: Number(url.port || 6379) }
}

/**
 * A: Redis directly; B: through a proxy the test freezes, cuts or refuses.
 * Both share `table` (the database) and one namespace; resolves once both buses are up.
 */
async function pairBehindProxy (t: Test, table: Map<string, Decision | null>): Promise<{ proxy: TcpProxy, a: TestApp, b: TestApp }> {
  const ns = namespace()
  t.teardown(ns.cleanup)
  const proxy = await proxyTo(t, defaultTarget())
  const a = await instance(t, REDIS_URL, ns, table)
  const b = await instance(t, proxy.url, ns, table)
  t.ok(await eventually(() => redis(a).connected && redis(b).connected), 'both buses up')
  return { proxy, a, b }
}

interface Watch {
  /** ms from `since` to the start of the first read that denied; undefined if none within GIVE_UP_MS. */
  deniedAfter: number | undefined
  /** ms from `since` to the start of the last read that still granted (-Infinity if none). */
  lastGrantAfter: number
  reads: number
  /** Statuses other than 200 and 403 (none expected). */
  other: number[]
}

/**
 * Polls `read` every POLL_MS (and once at `since + BOUND_MS`) until it
 * answers 403, at most GIVE_UP_MS.
 */
async function watchUntilDenied (read: () => Promise<number>, since: number): Promise<Watch> {
  const bound = since + BOUND_MS
  const w: Watch = { deniedAfter: undefined, lastGrantAfter: -Infinity, reads: 0, other: [] }
  while (performance.now() - since < GIVE_UP_MS) {
    const start = performance.now()
    const status = await read()
    w.reads++
    if (status === 403) {
      w.deniedAfter = start - since
      return w
    }
    if (status === 200) w.lastGrantAfter = start - since
    else w.other.push(status)
    const next = start < bound ? Math.min(start + POLL_MS, bound) : start + POLL_MS
    const wait = next - performance.now()
    if (wait > 0) await sleep(Math.ceil(wait))
  }
  return w
}

const ms = (n: number | undefined): string => n === undefined ? 'never' : n === -Infinity ? 'none' : `${Math.round(n)} ms`

/** The bound checks of one measurement, and its comment. */
function checkBound (t: Test, w: Watch, what: string): void {
  t.comment(`${what}: denied after ${ms(w.deniedAfter)} (last grant served at ${ms(w.lastGrantAfter)}, ${w.reads} reads)`)
  t.same(w.other, [], `${what}: every read answered 200 or 403`)
  t.ok(w.deniedAfter !== undefined, `${what}: denied within ${GIVE_UP_MS} ms`)
  t.ok(w.lastGrantAfter < BOUND_MS, `${what}: the revoked grant was not served ${BOUND_MS} ms or more after (last at ${ms(w.lastGrantAfter)})`)
  t.ok(w.deniedAfter !== undefined && w.deniedAfter <= BOUND_MS + POLL_MS,
    `${what}: denied within the ${BOUND_MS} ms bound (first denying read at ${ms(w.deniedAfter)}, poll resolution ${POLL_MS} ms)`)
}

// ------------------------------------------------------------ private Redis

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

async function pong (port: number): Promise<boolean> {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, connectTimeout: 500, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    await client.connect()
    return await client.ping() === 'PONG'
  } catch {
    return false
  } finally {
    client.disconnect()
  }
}

/** A private redis-server: no persistence, so a restart starts empty. */
function privateRedis (t: Test, port: number): { start: () => Promise<void>, kill: () => Promise<void> } {
  let child: ChildProcess | undefined
  const kill = async (): Promise<void> => {
    const running = child
    child = undefined
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return
    const exited = once(running, 'exit')
    running.kill('SIGKILL')
    await exited
  }
  t.teardown(kill)
  return {
    kill,
    async start () {
      child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { stdio: 'ignore' })
      child.on('error', () => {})
      if (!await eventually(() => pong(port), 5000)) throw new Error(`redis-server on port ${port} did not answer`)
    }
  }
}

// ------------------------------------------------------------------ tests

const available = await redisAvailable()
if (available === false) {
  test('Redis fault tests', { skip: `no Redis at ${REDIS_URL}: start one, or set REDIS_URL, to run the fault tests` }, () => {})
} else {
  test('Redis frozen for B (sockets open, nothing moves): B denies within the bound, and after the thaw drops its L1', async (t) => {
    const table = new Map<string, Decision | null>([[`generation:${G1}:${U1}`, { granted: true }], [`generation:${G2}:${U2}`, { granted: true }]])
    const { proxy, a, b } = await pairBehindProxy(t, table)

    t.equal(await get(a), 200)
    t.equal(await get(a, G2, U2), 200, 'A also puts a second grant in L2')
    t.equal(await get(b), 200)
    t.equal(redis(b).l2Hits, 1, 'B took the grant from L2 and keeps it in L1')
    proxy.freeze()

    table.set(`generation:${G1}:${U1}`, { granted: false })
    const since = performance.now()
    const res = await a.app.inject({ method: 'POST', url: '/_authz/invalidate', headers: admin(a), payload: { userId: U1 } })
    t.equal(res.statusCode, 200, 'Redis took the revocation')
    t.same(res.json(), { invalidated: 1, acknowledged: 1, instances: 2 }, 'B subscriber received it on the Redis side but never acknowledged')
    t.comment(`A's admin invalidation answered after ${Math.round(performance.now() - since)} ms`)
    t.equal(await get(a), 403, 'A denies at once')

    const w = await watchUntilDenied(() => get(b), since)
    checkBound(t, w, 'B behind a frozen proxy')
    t.equal(b.app.authz.busIsDown, true, 'B noticed it no longer hears its own heartbeat')
    t.equal(redis(b).connected, false)

    const before = redis(b)
    const calls = b.db.calls.length
    t.equal(await get(b, G2, U2), 200, 'a new load during the outage')
    t.equal(b.db.calls.length, calls + 1, 'answered by B resolver')
    t.equal(redis(b).l2Hits, before.l2Hits, 'not from L2, which holds it but is not read while the bus is down')
    t.equal(b.app.authz.getGenerationAccess(G2, U2).hit, true, 'kept in B L1 during the outage')

    proxy.thaw()
    const thawed = performance.now()
    t.ok(await eventually(() => redis(b).connected, GIVE_UP_MS), 'B bus back after the thaw (getStats().redis.connected)')
    t.comment(`B bus back ${Math.round(performance.now() - thawed)} ms after the thaw`)
    t.equal(b.app.authz.busIsDown, false)
    t.ok(redis(b).outages >= 1, 'the outage was counted')
    t.equal(b.app.authz.getGenerationAccess(G2, U2).hit, false, 'L1 entries stored before the bus came back were dropped')
    t.equal(b.app.authz.getGenerationAccess(G1, U1).hit, false)
    t.equal(b.app.authz.getStats().totalEntries, 0, 'B L1 is empty')
    t.equal(await get(b), 403, 'the grant is still denied on B')
    t.equal(await get(a), 403, 'and on A')
    t.equal(await get(b, G2, U2), 200, 'B works normally again')
  })

  // At once: the invalidation script is likely written on the dying socket before B's client sees the close (ioredis resends it on
  // reconnect). After B noticed: the client is already reconnecting, so only the outbox's own retry can deliver it.
  for (const when of ['at once', 'after B noticed the cut'] as const) {
    test(`B command connection cut and refused, subscriber up, revocation on B ${when}: applied at once, queued, and reaches A once the connection is back`, async (t) => {
      const others = Array.from({ length: 150 }, () => randomUUID())
      const table = new Map<string, Decision | null>([[`generation:${G1}:${U1}`, { granted: true }]])
      for (const id of others) table.set(`generation:${id}:${U2}`, { granted: true })
      const { proxy, a, b } = await pairBehindProxy(t, table)

      t.equal(await get(a), 200)
      t.equal(await get(b), 200)
      // Grants in L2 that B never read: each read of one on B shows whether B read L2.
      for (const id of others) t.equal(await get(a, id, U2), 200)
      const control = others.pop() as string
      let next = 0
      const unread = (): string | undefined => next < others.length ? others[next++] : undefined

      proxy.refuse(true)
      const cut = proxy.cutWhere((c) => !isSubscriber(c))
      t.ok(cut >= 1, `B command connection cut (${cut} connection(s))`)
      t.equal(proxy.connections().filter(isSubscriber).length, 1, 'B subscriber stays connected')

      if (when === 'after B noticed the cut') t.ok(await eventually(() => !redis(b).connected, GIVE_UP_MS), 'B bus down: its heartbeats do not get through')
      table.set(`generation:${G1}:${U1}`, { granted: false })
      const called = performance.now()
      const revocation = b.app.authz.invalidateUserAuthorizationCache(U1)
      revocation.catch(() => {})
      t.equal(b.app.authz.getGenerationAccess(G1, U1).hit, false, 'applied on B at once, before Redis took it')
      t.equal(await get(b), 403, 'B denies while its invalidation is in flight')
      await t.rejects(revocation, { code: 'FST_AUTHZ_BUS_FAILED', statusCode: 503 }, 'B invalidate rejects: Redis did not take it')
      t.comment(`B invalidate rejected after ${Math.round(performance.now() - called)} ms (ackTimeoutMs 250)`)
      t.ok(redis(b).pending >= 1, 'the invalidation stays queued on B')
      t.equal(await get(b), 403)
      t.equal(await get(a), 200, 'A has not heard of it yet: only B outbox holds it')

      // Reads on B of grants L2 holds, while the invalidation is queued: none may come from L2.
      let whilePending = 0
      let whilePendingBusUp = 0
      let fromL2WhilePending = 0
      const reads = { done: false }
      const readB = async (): Promise<void> => {
        let id: string | undefined
        while (!reads.done && redis(b).pending > 0 && (id = unread()) !== undefined) {
          const before = redis(b)
          t.equal(await get(b, id, U2), 200)
          const after = redis(b)
          // pending only falls here: still queued after the read means queued all through it.
          if (after.pending > 0) {
            whilePending++
            if (before.connected) whilePendingBusUp++
            fromL2WhilePending += after.l2Hits - before.l2Hits
          }
          await sleep(POLL_MS)
        }
      }

      const outage = readB()
      await sleep(1500)
      proxy.refuse(false)
      const back = performance.now()
      const w = await watchUntilDenied(() => get(a), back)
      checkBound(t, w, 'A, from B command connection coming back')
      t.ok(await eventually(() => redis(b).pending === 0, GIVE_UP_MS), 'B outbox drained (stats.redis.pending back to 0)')
      t.comment(`B outbox drained ${Math.round(performance.now() - back)} ms after the connection came back`)
      reads.done = true
      await outage
      t.ok(whilePending > 0, `B read grants L2 holds while its invalidation was queued (${whilePending} reads, ${whilePendingBusUp} of them with the bus up again)`)
      t.equal(fromL2WhilePending, 0, 'none of them came from L2 (l2Hits did not move)')
      t.ok(redis(a).received >= 1, 'A received the invalidation over the bus')
      t.comment(`A received ${redis(a).received} invalidation message(s) from B`)

      t.ok(await eventually(() => redis(b).connected, GIVE_UP_MS), 'B bus up again')
      const before = redis(b)
      const calls = b.db.calls.length
      t.equal(await get(b, control, U2), 200)
      t.equal(redis(b).l2Hits, before.l2Hits + 1, 'with nothing queued and the bus up, B reads L2 again')
      t.equal(b.db.calls.length, calls, 'without calling its resolver')
      t.equal(await get(b), 403)
      t.equal(await get(a), 403)
    })
  }

  test('Redis restart (SIGKILL, empty on restart): a revocation made while it is down holds on A and B, and L2 holds no stale grant', { skip: existsSync(REDIS_SERVER) ? false : `no ${REDIS_SERVER}` }, async (t) => {
    const port = await freePort()
    const server = privateRedis(t, port)
    await server.start()
    const url = `redis://127.0.0.1:${port}`
    const id = randomUUID()
    const names = { keyPrefix: `authz-faults:${id}:`, channel: `authz-faults:${id}:bus` }
    const proxy = await proxyTo(t, { host: '127.0.0.1', port })
    const table = new Map<string, Decision | null>([[`generation:${G1}:${U1}`, { granted: true }]])
    const a = await instance(t, url, names, table)
    const b = await instance(t, proxy.url, names, table)
    t.ok(await eventually(() => redis(a).connected && redis(b).connected), 'both buses up')
    t.equal(await get(a), 200)
    t.equal(await get(b), 200)
    t.equal(redis(b).l2Hits, 1, 'B took the grant from L2')

    await server.kill()
    t.ok(await eventually(() => a.app.authz.busIsDown && b.app.authz.busIsDown), 'both buses down')
    table.set(`generation:${G1}:${U1}`, { granted: false })
    await t.rejects(a.app.authz.invalidateUserAuthorizationCache(U1), { code: 'FST_AUTHZ_BUS_FAILED' }, 'A invalidate rejects while Redis is down')
    t.ok(redis(a).pending >= 1, 'and stays queued on A')
    t.equal(await get(a), 403, 'applied on A at once')
    await sleep(500)

    const restarted = performance.now()
    await server.start()
    t.comment(`redis-server answered ${Math.round(performance.now() - restarted)} ms after it was started again`)
    const [wa, wb] = await Promise.all([watchUntilDenied(() => get(a), restarted), watchUntilDenied(() => get(b), restarted)])
    checkBound(t, wa, 'A, from the restart')
    checkBound(t, wb, 'B, from the restart')
    t.ok(await eventually(() => redis(a).pending === 0 && redis(a).connected && redis(b).connected, GIVE_UP_MS), 'A outbox drained and both buses back')
    t.comment(`A outbox drained and both buses back ${Math.round(performance.now() - restarted)} ms after the restart`)
    t.equal(await get(a), 403)
    t.equal(await get(b), 403)

    const c = await instance(t, url, names, table)
    t.ok(await eventually(() => redis(c).connected), 'a third instance joins')
    t.equal(await get(c), 403, 'a fresh instance loads the denial: L2 holds no stale grant')
    const cs = redis(c)
    t.comment(`third instance: ${cs.l2Hits === 1 ? 'the denial came from L2' : 'L2 had nothing valid; its resolver answered'} (l2Hits ${cs.l2Hits}, l2Misses ${cs.l2Misses}, resolver calls ${c.db.calls.length})`)
    t.equal(cs.l2Hits + c.db.calls.length, 1, 'answered by L2 or by its resolver, once')
  })

  test('everything of B cut and refused: B denies within the bound while cut off, then the bus comes back and B drops its L1', async (t) => {
    const table = new Map<string, Decision | null>([[`generation:${G1}:${U1}`, { granted: true }]])
    const { proxy, a, b } = await pairBehindProxy(t, table)
    t.equal(await get(a), 200)
    t.equal(await get(b), 200)

    proxy.refuse(true)
    proxy.cut()
    table.set(`generation:${G1}:${U1}`, { granted: false })
    const since = performance.now()
    await a.app.authz.invalidateUserAuthorizationCache(U1)
    t.equal(await get(a), 403)
    const w = await watchUntilDenied(() => get(b), since)
    checkBound(t, w, 'B cut off')
    t.equal(b.app.authz.busIsDown, true, 'B bus still down: B denied on the staleness bound, not by hearing the revocation')
    t.equal(redis(b).received, 0, 'B never received the revocation')

    proxy.refuse(false)
    const back = performance.now()
    t.ok(await eventually(() => redis(b).connected, GIVE_UP_MS), 'B bus back')
    t.comment(`B bus back ${Math.round(performance.now() - back)} ms after the proxy stopped refusing`)
    t.equal(b.app.authz.getStats().totalEntries, 0, 'B dropped the L1 entries stored before')
    t.equal(await get(b), 403, 'the grant is still denied on B')
  })

  // A load B started before the revocation (its resolver read the grant) and that stores after it, while B cannot hear the bus:
  // the revocation must still hold on B within the bound. Started before the freeze, the load holds a fence and its L2 write
  // fails (Redis frozen); started while B knows its bus is down, it has no fence and writes no L2. The resolver answers
  // 1.5 s after the revocation, within loaderTimeoutMs (2000 ms).
  for (const started of ['before the freeze', 'while B knows its bus is down'] as const) {
    test(`a load on B in flight across a revocation B cannot hear (started ${started}): B denies within the bound`, async (t) => {
      const table = new Map<string, Decision | null>([[`generation:${G1}:${U1}`, { granted: true }]])
      const { proxy, a, b } = await pairBehindProxy(t, table)

      if (started === 'while B knows its bus is down') {
        proxy.freeze()
        t.ok(await eventually(() => !redis(b).connected, GIVE_UP_MS), 'B bus down')
      }
      const gate = b.db.hold()
      const first = get(b)
      t.ok(await eventually(() => b.db.calls.length === 1), 'B resolver read the grant (L2 had nothing), and hangs')
      if (started === 'before the freeze') proxy.freeze()

      table.set(`generation:${G1}:${U1}`, { granted: false })
      const since = performance.now()
      const res = await a.app.inject({ method: 'POST', url: '/_authz/invalidate', headers: admin(a), payload: { userId: U1 } })
      t.equal(res.statusCode, 200, 'Redis took the revocation')
      t.equal(await get(a), 403)
      const release = setTimeout(() => {
        b.db.gate = undefined
        gate.resolve()
      }, Math.max(0, since + 1500 - performance.now()))
      t.teardown(() => clearTimeout(release))

      const w = await watchUntilDenied(() => get(b), since)
      t.equal(await first, 200, 'the request from before the revocation gets the answer of its time')
      checkBound(t, w, `B, load in flight (started ${started})`)

      proxy.thaw()
      t.ok(await eventually(() => redis(b).connected, GIVE_UP_MS), 'B bus back after the thaw')
      t.equal(await get(b), 403, 'denied on B after the thaw')
    })
  }
}
