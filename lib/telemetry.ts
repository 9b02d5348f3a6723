/**
 * diagnostics_channel: what OpenTelemetry and APM agents subscribe to, as
 * they do for Fastify, undici and pg. Nothing is published, and nothing is
 * allocated, while no one subscribes: the hit path never publishes at all.
 *
 * - `fastify-authz-cache:load` (a TracingChannel: `tracing:…:start`, `end`,
 *   `asyncStart`, `asyncEnd`, `error`) around every resolver call, one or a
 *   batch. The context is a LoadMessage; `error` carries the 503 error
 *   (timeout or failure), `result` the raw answer.
 * - `fastify-authz-cache:invalidate`: every invalidation applied here
 *   (InvalidateMessage), local or from another instance.
 * - `fastify-authz-cache:bus`: the invalidation feeds (BusMessage): an
 *   invalidation published to every instance with its acknowledgements and
 *   duration, a feed (the Redis bus, the PostgreSQL LISTEN connection) lost
 *   or back.
 */
import diagnostics from 'node:diagnostics_channel'
import type { InvalidationRequest } from './types.js'

export const LOAD_CHANNEL = 'fastify-authz-cache:load'
export const INVALIDATE_CHANNEL = 'fastify-authz-cache:invalidate'
export const BUS_CHANNEL = 'fastify-authz-cache:bus'

/** The context of a resolver call on the load channel. Never holds a token or a request. */
export interface LoadMessage {
  /** The cache (engine) that calls: channels are process-wide. */
  cache: object
  kind: string
  userId: string
  /** The ids asked about: one, or a batch's. */
  ids: string[]
  batch: boolean
  /** Set by the channel: the 503 error the call failed with. */
  error?: unknown
  /** Set by the channel: what the resolver answered. */
  result?: unknown
}

export interface InvalidateMessage {
  cache: object
  request: InvalidationRequest
  /** Entries removed here. */
  removed: number
  origin: 'local' | 'remote'
}

export type BusMessage =
  | { cache: object, event: 'published', request: InvalidationRequest, acknowledged: number, instances: number, durationMs: number }
  | { cache: object, event: 'publish-failed', request: InvalidationRequest, error: unknown }
  | { cache: object, event: 'down' | 'up', feed: string }

export const loadChannel = diagnostics.tracingChannel(LOAD_CHANNEL)
export const invalidateChannel = diagnostics.channel(INVALIDATE_CHANNEL)
export const busChannel = diagnostics.channel(BUS_CHANNEL)

/** Runs `fn` (a resolver call) inside the load channel's trace when someone listens. */
export function traced<T> (message: () => LoadMessage, fn: () => Promise<T>): Promise<T> {
  if (!loadChannel.hasSubscribers) return fn()
  return loadChannel.tracePromise(fn, message() as unknown as object)
}
