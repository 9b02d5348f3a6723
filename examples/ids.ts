/**
 * Canonical ids. The cache keys the exact id string, but PostgreSQL's uuid
 * type reads `A1B2...`, `a1b2...`, `{a1b2...}` and the form without hyphens
 * as one row: an alias would be a second cache entry that an invalidation of
 * the canonical id never reaches. So every id is made canonical (lowercase,
 * hyphenated) before a check, `request.authz` or a handler sees it, and an id
 * that is not a UUID is refused with 400 before it reaches the resolver.
 *
 * - route params: `canonicalUuidParams`, an app-level `onRequest` hook. App
 *   hooks run before route hooks, so it runs before the plugin's route check
 *   (which runs before Fastify validates params against the schema).
 * - body ids: `canonicalUuidBody`, an app-level `preValidation` hook (before the
 *   body schema, so before the `app.authz.require()` preHandler).
 * - the user: `getUserId: canonicalUserId` in the plugin's options.
 *
 * Both hooks act on the properties that the route's schema declares
 * `{ type: 'string', format: 'uuid' }`: declare them, and they are canonical.
 */
import type { FastifyRequest, FastifyReply, HookHandlerDoneFunction } from 'fastify'
import { errors } from '../lib/index.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** The canonical form of a hyphenated UUID in any case, or undefined for anything else. */
export function canonicalUuid (value: unknown): string | undefined {
  return typeof value === 'string' && UUID.test(value) ? value.toLowerCase() : undefined
}

/** Whether `value` is a UUID in canonical form already. */
export function isCanonicalUuid (value: unknown): value is string {
  return typeof value === 'string' && CANONICAL_UUID.test(value)
}

/** The plugin's `getUserId`: the token's `sub`, canonical; undefined (401) when it is not a UUID. */
export function canonicalUserId (request: FastifyRequest): string | undefined {
  return canonicalUuid((request.user as { sub?: unknown } | undefined)?.sub)
}

/** The names of the properties a JSON schema declares `format: 'uuid'` (top level), cached per schema. */
const uuidNamesOf = new WeakMap<object, string[]>()
function uuidProperties (schema: unknown): string[] {
  if (typeof schema !== 'object' || schema === null) return []
  let names = uuidNamesOf.get(schema)
  if (names === undefined) {
    const properties = (schema as { properties?: Record<string, { format?: unknown }> }).properties ?? {}
    names = Object.keys(properties).filter((name) => properties[name]?.format === 'uuid')
    uuidNamesOf.set(schema, names)
  }
  return names
}

/**
 * `app.addHook('onRequest', canonicalUuidParams)`, before the routes: route
 * params declared `format: 'uuid'` become canonical, or the request ends with
 * 400 FST_AUTHZ_BAD_ID (what the plugin answers for a malformed id).
 */
export function canonicalUuidParams (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
  const names = uuidProperties(request.routeOptions.schema?.params)
  const params = request.params as Record<string, unknown>
  for (const name of names) {
    const id = canonicalUuid(params[name])
    if (id === undefined) {
      done(new errors.FST_AUTHZ_BAD_ID(name, 'expected a UUID'))
      return
    }
    params[name] = id
  }
  done()
}

/**
 * `app.addHook('preValidation', canonicalUuidBody)`: top-level body
 * properties declared `format: 'uuid'` become canonical; anything else is
 * left for the body schema to refuse (400 FST_ERR_VALIDATION).
 */
export function canonicalUuidBody (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
  const names = uuidProperties(request.routeOptions.schema?.body)
  const body = request.body as Record<string, unknown> | null | undefined
  if (names.length > 0 && typeof body === 'object' && body !== null) {
    for (const name of names) {
      const id = canonicalUuid(body[name])
      if (id !== undefined) body[name] = id
    }
  }
  done()
}
