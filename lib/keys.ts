/**
 * Cache keys and tags, in the seed's hierarchy:
 *
 *   auth:gen:{generationId}:user:{userId}:access
 *   auth:project:{projectId}:user:{userId}:access
 *   auth:team:{teamId}:user:{userId}:role
 *   auth:user:{userId}:profile
 *   auth:{kind}:{id}:user:{userId}:access          (custom kinds)
 *   uuid:validation:{uuidHash}:context:{context}
 *   cached:{name}:{argumentsKey}                    (app.authz.cached)
 *
 * Every id segment is escaped (`%` -> `%25`, `:` -> `%3A`, `*` -> `%2A`), so
 * a segment never holds a separator or a wildcard: two different
 * (kind, id, user) triples never share a key, and `auth:user:12345:*` never
 * touches user `123456`. Kind names are restricted to `[a-zA-Z0-9_-]`.
 */
import { createHash } from 'node:crypto'

const NEEDS_ESCAPE = /[%:*]/
const ESCAPE_ALL = /[%:*]/g
const ESCAPES: Record<string, string> = { '%': '%25', ':': '%3A', '*': '%2A' }

/** Escapes one key segment. Ids without `%`, `:` or `*` (UUIDs, numbers) come back unchanged. */
export function escapeKeySegment (segment: string): string {
  return NEEDS_ESCAPE.test(segment) ? segment.replace(ESCAPE_ALL, (c) => ESCAPES[c]) : segment
}

export type KeyBuilder = (id: string, userId: string) => string

/** The key builder of a kind: a closure per kind so the hot path does not branch on the kind. */
export function keyBuilderFor (kind: string): KeyBuilder {
  switch (kind) {
    case 'generation':
      return (id, userId) => `auth:gen:${escapeKeySegment(id)}:user:${escapeKeySegment(userId)}:access`
    case 'project':
      return (id, userId) => `auth:project:${escapeKeySegment(id)}:user:${escapeKeySegment(userId)}:access`
    case 'team':
      return (id, userId) => `auth:team:${escapeKeySegment(id)}:user:${escapeKeySegment(userId)}:role`
    case 'profile':
      return (_id, userId) => `auth:user:${escapeKeySegment(userId)}:profile`
    default:
      return (id, userId) => `auth:${kind}:${escapeKeySegment(id)}:user:${escapeKeySegment(userId)}:access`
  }
}

/** The `uuidHash` segment of a uuid-validation key: the uuid is not kept in the key. */
export function uuidHash (uuid: string): string {
  return createHash('sha256').update(uuid).digest('hex').slice(0, 32)
}

export function uuidValidationKey (uuid: string, context: string): string {
  return `uuid:validation:${uuidHash(uuid)}:context:${escapeKeySegment(context)}`
}

export function cachedFunctionKey (name: string, argumentsKey: string): string {
  return `cached:${name}:${escapeKeySegment(argumentsKey)}`
}

/** The tag every entry of `kind` for resource `id` carries. */
export function resourceTag (kind: string, id: string): string {
  return `${kind}:${id}`
}

/** The tag every entry of a user carries. */
export function userTag (userId: string): string {
  return `user:${userId}`
}

/** The tags an invalidation request names: its `tags`, and those of its userId/generationId/projectId/teamId. */
export function invalidationTags (request: { userId?: string, generationId?: string, projectId?: string, teamId?: string, tags?: string[] }): Set<string> {
  const tags = new Set<string>()
  if (request.userId !== undefined) tags.add(userTag(request.userId))
  if (request.generationId !== undefined) tags.add(resourceTag('generation', request.generationId))
  if (request.projectId !== undefined) tags.add(resourceTag('project', request.projectId))
  if (request.teamId !== undefined) tags.add(resourceTag('team', request.teamId))
  for (const tag of request.tags ?? []) tags.add(tag)
  return tags
}

const REGEXP_SPECIALS = /[.+?^${}()|[\]\\/-]/g

/**
 * Compiles a key pattern: `*` matches any run of characters (including
 * none), everything else matches itself. Anchored at both ends.
 */
export function compilePattern (pattern: string): RegExp {
  const source = pattern.split('*').map((part) => part.replace(REGEXP_SPECIALS, '\\$&')).join('[\\s\\S]*')
  return new RegExp(`^${source}$`)
}

/**
 * A stable serialization of function arguments for `app.authz.cached`:
 * object keys sorted, so `{ a, b }` and `{ b, a }` share an entry.
 */
export function stableSerialize (value: unknown): string {
  if (value === null || typeof value !== 'object') {
    return value === undefined ? 'undefined' : typeof value === 'bigint' ? `${value}n` : JSON.stringify(value) ?? String(value)
  }
  if (Array.isArray(value)) return `[${value.map(stableSerialize).join(',')}]`
  if (value instanceof Date) return JSON.stringify(value.toISOString())
  const keys = Object.keys(value).sort()
  return `{${keys.map((k) => `${JSON.stringify(k)}:${stableSerialize((value as Record<string, unknown>)[k])}`).join(',')}}`
}
