/**
 * Metrics: the families of the stats (the Prometheus text of the admin
 * route), and their registration on a prom-client registry with two
 * histograms the stats cannot give (`metrics: { registry }`).
 */
import { performance } from 'node:perf_hooks'
import { FST_AUTHZ_OPTIONS } from './errors.js'
import { busChannel, loadChannel, type BusMessage, type LoadMessage } from './telemetry.js'
import type { CacheStats } from './types.js'

/** Labels of one sample. */
export type Labels = Readonly<Record<string, string>>

/** One metric family: name without the `authz_cache_` prefix. */
export interface MetricFamily {
  name: string
  type: 'counter' | 'gauge'
  help: string
  samples: Array<{ labels: Labels, value: number }>
}

export const METRIC_PREFIX = 'authz_cache_'
const NONE: Labels = Object.freeze({})

/**
 * The metric families of the stats, in exposition order: what the text
 * route renders and what `metrics: { registry }` registers (every name gets
 * the `authz_cache_` prefix). The Redis and PostgreSQL families are present
 * when the stats have those blocks.
 */
export function metricFamilies (stats: CacheStats): MetricFamily[] {
  const families: MetricFamily[] = []
  const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: Array<[Labels, number]>): void => {
    families.push({ name, type, help, samples: samples.map(([labels, value]) => ({ labels, value: Number.isFinite(value) ? value : 0 })) })
  }
  const kinds = Object.entries(stats.byKind)
  const label = (kind: string): Labels => ({ kind })
  // Per kind only: an unlabelled total beside them would make sum() count every hit twice.
  metric('hits_total', 'counter', 'Cache hits, by kind.', kinds.map(([k, v]): [Labels, number] => [label(k), v.hits]))
  metric('misses_total', 'counter', 'Cache misses, by kind.', kinds.map(([k, v]): [Labels, number] => [label(k), v.misses]))
  metric('hit_rate_percent', 'gauge', 'Hits per lookup, in percent.', [[NONE, stats.hitRatePercent]])
  metric('access_time_average_seconds', 'gauge', 'Mean time of a sampled cache hit.', [[NONE, stats.averageAccessTimeMs / 1000]])
  metric('access_time_p99_seconds', 'gauge', '99th percentile of sampled cache hits.', [[NONE, stats.p99AccessTimeMs / 1000]])
  metric('entries', 'gauge', 'Live entries.', [[NONE, stats.totalEntries]])
  metric('entries_max', 'gauge', 'Entry cap (maxEntries).', [[NONE, stats.maxEntries]])
  metric('size_bytes', 'gauge', 'Accounted size of the entries.', [[NONE, Math.round(stats.totalSizeMb * 1024 * 1024)]])
  metric('size_max_bytes', 'gauge', 'Size cap (maxSizeMb).', [[NONE, Math.round(stats.maxSizeMb * 1024 * 1024)]])
  metric('evictions_total', 'counter', 'Entries evicted to stay under a cap.', [[NONE, stats.evictions]])
  const e = stats.eviction
  metric('admission_duels_total', 'counter', 'TinyLFU duels between the window\'s candidate and the main region\'s victim, by who stayed.', [[{ outcome: 'admitted' }, e.admitted], [{ outcome: 'rejected' }, e.rejected]])
  metric('sketch_resets_total', 'counter', 'Times the TinyLFU frequency sketch halved its counters.', [[NONE, e.sketchResets]])
  metric('expirations_total', 'counter', 'Entries removed at the end of their TTL.', [[NONE, stats.expirations]])
  metric('invalidations_total', 'counter', 'Entries removed by invalidation.', [[NONE, stats.invalidations]])
  metric('loads_total', 'counter', 'Resolver loads started.', [[NONE, stats.loads]])
  metric('coalesced_total', 'counter', 'Callers that joined a load already running.', [[NONE, stats.coalesced]])
  metric('loader_errors_total', 'counter', 'Resolver failures (denied, not cached).', [[NONE, stats.loaderErrors]])
  metric('loader_timeouts_total', 'counter', 'Resolver timeouts (denied, not cached).', [[NONE, stats.loaderTimeouts]])
  metric('batches_total', 'counter', 'Batch resolver calls (many ids of one user in one call).', [[NONE, stats.batches]])
  const w = stats.warming
  metric('warming_predicted_total', 'counter', 'Decisions loaded by predictive warming.', [[NONE, w.predicted]])
  metric('warming_used_total', 'counter', 'Predicted decisions a check then used.', [[NONE, w.used]])
  metric('warming_wasted_total', 'counter', 'Predicted decisions that left the cache unused.', [[NONE, w.wasted]])
  metric('warming_bytes', 'gauge', 'Accounted bytes of the predictor\'s tables (within size_max_bytes).', [[NONE, w.bytes]])
  if (stats.redis !== undefined) {
    const r = stats.redis
    metric('redis_connected', 'gauge', 'Whether the Redis bus is connected (1) or not (0).', [[NONE, r.connected ? 1 : 0]])
    metric('redis_l2_hits_total', 'counter', 'L1 misses served from Redis.', [[NONE, r.l2Hits]])
    metric('redis_l2_misses_total', 'counter', 'L1 misses Redis did not have.', [[NONE, r.l2Misses]])
    metric('redis_l2_errors_total', 'counter', 'Redis commands that failed (counted as misses).', [[NONE, r.l2Errors]])
    metric('redis_published_total', 'counter', 'Invalidations published.', [[NONE, r.published]])
    metric('redis_received_total', 'counter', 'Invalidations received from other instances.', [[NONE, r.received]])
    metric('redis_outages_total', 'counter', 'Times the bus was lost (connection closed, or own heartbeat not heard).', [[NONE, r.outages]])
    metric('redis_refused_total', 'counter', 'L2 values refused on read and L2 writes refused, because an invalidation came after their load started.', [[NONE, r.refused]])
    metric('redis_pending', 'gauge', 'Invalidations Redis has not taken yet (retried in order).', [[NONE, r.pending]])
    metric('redis_ack_timeouts_total', 'counter', 'Invalidations not acknowledged by every instance within ackTimeoutMs.', [[NONE, r.ackTimeouts]])
  }
  if (stats.postgres !== undefined) {
    const p = stats.postgres
    metric('postgres_connected', 'gauge', 'Whether the PostgreSQL LISTEN connection is up (1) or not (0).', [[NONE, p.connected ? 1 : 0]])
    metric('postgres_received_total', 'counter', 'Invalidations received from PostgreSQL.', [[NONE, p.received]])
    metric('postgres_malformed_total', 'counter', 'PostgreSQL notifications that were not a valid invalidation (each invalidated everything).', [[NONE, p.malformed]])
    metric('postgres_outages_total', 'counter', 'Times the PostgreSQL LISTEN connection was lost.', [[NONE, p.outages]])
  }
  return families
}

/** Prometheus exposition text of the stats. */
export function prometheusText (stats: CacheStats): string {
  const lines: string[] = []
  for (const family of metricFamilies(stats)) {
    const name = METRIC_PREFIX + family.name
    lines.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} ${family.type}`)
    for (const { labels, value } of family.samples) lines.push(`${name}${renderLabels(labels)} ${value}`)
  }
  return lines.join('\n') + '\n'
}

function renderLabels (labels: Labels): string {
  const keys = Object.keys(labels)
  if (keys.length === 0) return ''
  // Kind names are restricted to a safe alphabet; anything else is replaced rather than escaped.
  return `{${keys.map((key) => `${key}="${labels[key].replace(/["\\\n]/g, '_')}"`).join(',')}}`
}

// ------------------------------------------------------------ prom-client

/** What is used of a prom-client `Registry`. */
interface Registry {
  registerMetric (metric: unknown): void
  removeSingleMetric (name: string): void
  getSingleMetric (name: string): unknown
}

/** What is used of the prom-client module. */
interface PromClient {
  Gauge: new (config: Record<string, unknown>) => { set: (labels: Record<string, string>, value: number) => void, reset: () => void }
  Counter: new (config: Record<string, unknown>) => { inc: (labels: Record<string, string>, value: number) => void, reset: () => void }
  Histogram: new (config: Record<string, unknown>) => { observe: (labels: Record<string, string>, value: number) => void }
}

/** Seconds: from a fast resolver to one past a 2 s `loaderTimeoutMs`. */
export const RESOLVER_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5]
/** Seconds: from a loopback hop to an acknowledgement timeout. */
export const PROPAGATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/** The handle of registered metrics: `close()` removes them from the registry and stops listening. */
export interface RegisteredMetrics {
  names: string[]
  close (): void
}

/**
 * Registers the cache's metrics on a prom-client registry: every family of
 * the stats (collected from `stats()` at scrape time, so the hit path pays
 * nothing), plus `authz_cache_resolver_duration_seconds{kind}` (every
 * resolver call, from the load tracing channel) and
 * `authz_cache_invalidation_propagation_seconds` (from publishing an
 * invalidation to every instance's acknowledgement, from the bus channel).
 * The families are those of the stats at registration (the Redis and
 * PostgreSQL ones when those are configured). Only the messages of `cache`
 * are counted (channels are process-wide).
 */
export async function registerMetrics (cache: { getStats: () => CacheStats }, registry: unknown): Promise<RegisteredMetrics> {
  const stats = (): CacheStats => cache.getStats()
  const families = metricFamilies(stats())
  const target = registry as Registry
  if (registry === null || typeof registry !== 'object' || typeof target.registerMetric !== 'function' || typeof target.removeSingleMetric !== 'function') {
    throw new FST_AUTHZ_OPTIONS('metrics.registry', 'must be a prom-client Registry (new Registry(), or register)')
  }
  let client: PromClient
  try {
    client = await import('prom-client') as unknown as PromClient
  } catch (error) {
    throw new FST_AUTHZ_OPTIONS('metrics', 'needs the prom-client package (npm install prom-client)', { cause: error })
  }
  const names: string[] = []
  const add = (name: string, make: () => unknown): void => {
    if (target.getSingleMetric(name) !== undefined) throw new FST_AUTHZ_OPTIONS('metrics.registry', `already has a metric named ${name} (one registry per cache)`)
    make()
    names.push(name)
  }
  for (const family of families) {
    const name = METRIC_PREFIX + family.name
    const labelNames = Object.keys(family.samples[0]?.labels ?? NONE)
    const collect = family.type === 'counter'
      ? function (this: { reset: () => void, inc: (labels: Record<string, string>, value: number) => void }) {
        this.reset()
        for (const sample of current(family.name)) this.inc(sample.labels, sample.value)
      }
      : function (this: { reset: () => void, set: (labels: Record<string, string>, value: number) => void }) {
        this.reset()
        for (const sample of current(family.name)) this.set(sample.labels, sample.value)
      }
    const config = { name, help: family.help, labelNames, registers: [registry], collect }
    add(name, () => family.type === 'counter' ? new client.Counter(config) : new client.Gauge(config))
  }

  // One stats snapshot per scrape, whatever the number of families.
  let snapshot: { at: number, byName: Map<string, MetricFamily['samples']> } | undefined
  function current (name: string): MetricFamily['samples'] {
    const now = performance.now()
    if (snapshot === undefined || now - snapshot.at > 100) {
      snapshot = { at: now, byName: new Map(metricFamilies(stats()).map((family) => [family.name, family.samples])) }
    }
    return snapshot.byName.get(name) ?? []
  }

  const resolverName = `${METRIC_PREFIX}resolver_duration_seconds`
  const propagationName = `${METRIC_PREFIX}invalidation_propagation_seconds`
  let resolver: InstanceType<PromClient['Histogram']> | undefined
  let propagation: InstanceType<PromClient['Histogram']> | undefined
  add(resolverName, () => { resolver = new client.Histogram({ name: resolverName, help: 'Resolver calls (one, or one batch), by kind, whatever their outcome.', labelNames: ['kind'], buckets: RESOLVER_BUCKETS, registers: [registry] }) })
  add(propagationName, () => { propagation = new client.Histogram({ name: propagationName, help: 'From publishing an invalidation to the acknowledgement of every instance (or the ack timeout).', buckets: PROPAGATION_BUCKETS, registers: [registry] }) })

  const started = new WeakMap<object, number>()
  const handlers = {
    start (message: unknown) {
      if ((message as LoadMessage).cache === cache) started.set(message as object, performance.now())
    },
    asyncEnd (message: unknown) {
      const at = started.get(message as object)
      if (at === undefined) return
      started.delete(message as object)
      resolver?.observe({ kind: (message as LoadMessage).kind }, (performance.now() - at) / 1000)
    }
  }
  // A rejection ends with asyncEnd too (after error).
  loadChannel.subscribe(handlers as Parameters<typeof loadChannel.subscribe>[0])
  const onBus = (message: unknown): void => {
    const bus = message as BusMessage
    if (bus.cache === cache && bus.event === 'published') propagation?.observe({}, bus.durationMs / 1000)
  }
  busChannel.subscribe(onBus)
  return {
    names,
    close () {
      loadChannel.unsubscribe(handlers as Parameters<typeof loadChannel.unsubscribe>[0])
      busChannel.unsubscribe(onBus)
      for (const name of names) target.removeSingleMetric(name)
    }
  }
}
