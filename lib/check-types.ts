/**
 * The public types of checks (route `config.authz`, `app.authz.require()`,
 * `request.authz.check()`), typed by the kinds in the augmentable
 * `AuthzKinds`. Re-exported by index.ts.
 */
import type { FastifyRequest } from 'fastify'

/**
 * The kinds the type checker knows for route checks. Add your custom kinds:
 *
 *     declare module 'fastify-authz-cache' {
 *       interface AuthzKinds { document: true }
 *     }
 */
export interface AuthzKinds {
  generation: true
  project: true
  team: true
  profile: true
}

/** A kind name the type checker knows (`AuthzKinds`): a misspelled kind does not compile. */
export type AuthzKind = keyof AuthzKinds & string

/**
 * Access levels, opt-in: empty by default (any string is accepted). Declare
 * yours and a misspelled access (`'raed'`) stops compiling in route checks,
 * `request.authz` and `app.authz.require()`:
 *
 *     declare module 'fastify-authz-cache' {
 *       interface AuthzAccessLevels { read: true, write: true }
 *     }
 */
export interface AuthzAccessLevels {}

/** An access level: any string, or one of `AuthzAccessLevels` once it is declared. */
export type AuthzAccess = [keyof AuthzAccessLevels] extends [never] ? string : keyof AuthzAccessLevels & string

/** Where a check finds its id: a route param name, or a function of the request. */
export type AuthzIdSource = string | ((request: FastifyRequest) => string | undefined)

type OneKind<Id> = {
  [K in keyof AuthzKinds]: { [P in K]: K extends 'profile' ? true | Id : Id } & { [P in Exclude<keyof AuthzKinds, K>]?: never }
}[keyof AuthzKinds]

/** `access` and/or `role`, and `fresh` to skip the cache for this check (reload and store). */
export type AuthzRequirementFields = ({ access: AuthzAccess, role?: string } | { role: string, access?: AuthzAccess }) & { fresh?: boolean }

/** One route check: exactly one kind with its id source, plus `access` and/or `role`. */
export type AuthzCheck = OneKind<AuthzIdSource> & AuthzRequirementFields

/** One `request.authz.check()` argument: one kind with its id, plus the requirement. */
export type AuthzRequestCheck = OneKind<string> & AuthzRequirementFields

/** `config.authz` of a route. */
export type AuthzRouteConfig = AuthzCheck | AuthzCheck[] | false
