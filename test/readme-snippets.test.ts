/**
 * Every ```ts block of README.md compiles as a user compiles it: strict,
 * module/moduleResolution nodenext, `fastify-authz-cache` resolved through
 * the package.json `exports` to the BUILT types (dist/lib/index.d.ts).
 *
 * Each block becomes a module of its own in a temporary project; a global
 * prelude declares what the blocks take from their surroundings (`db`,
 * `app`, `userId`, ...). All blocks are checked in one program, so a
 * `declare module` augmentation in one block is seen by the others, as in
 * an application. An HTML comment on the line right before a fence changes
 * how its block is checked:
 *
 *   <!-- snippet: skip -->             not checked (say why in the prose)
 *   <!-- snippet: resolvers-entry -->  entries of the `resolvers` option
 */
import { test } from 'tap'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const root = fileURLToPath(new URL('..', import.meta.url))
const builtTypes = join(root, 'dist', 'lib', 'index.d.ts')

/** Fewer checked blocks than this means the extraction or the markers went wrong. */
const MIN_CHECKED = 8

/** What the blocks use without declaring it. A script: its declarations are global, and a block's own shadow them. */
const PRELUDE = `type ReadmeDecision = import('fastify-authz-cache').Decision
declare const db: {
  generationAccess (userId: string, generationId: string, options?: { signal?: AbortSignal }): Promise<ReadmeDecision | null>
  generationsAccess (userId: string, generationIds: string[]): Promise<Array<{ id: string, decision: ReadmeDecision | null }>>
  projectAccess (userId: string, projectId: string): Promise<ReadmeDecision | null>
  teamRole (userId: string, teamId: string): Promise<ReadmeDecision | null>
  userProfile (userId: string): Promise<ReadmeDecision | null>
  latestGenerations (projectId: string, limit: number): Promise<Array<{ id: string, prompt: string }>>
}
declare const pool: { query (sql: string): Promise<unknown> }
declare const authzCache: typeof import('fastify-authz-cache').default
declare const resolvers: Record<string, import('fastify-authz-cache').ResolverSpec>
declare const app: import('fastify').FastifyInstance
declare const request: import('fastify').FastifyRequest
declare const handler: import('fastify').RouteHandlerMethod
declare const userId: string
declare const generationId: string
declare const projectId: string
declare const teamId: string
declare const id: string
declare const ids: string[]
declare const kind: 'generation'
declare const fresh: boolean
declare const decision: ReadmeDecision
declare const profile: Record<string, unknown>
declare const ttlSeconds: number
declare const uuid: string
declare const context: string
declare const result: unknown
declare const tags: string[]
declare const pattern: string
declare const keys: string[]
declare const checks: import('fastify-authz-cache').AuthzCheck[]
declare const fn: (generationId: string) => Promise<{ thumbnailUrl: string }>
declare const key: (generationId: string) => string
declare const entries: import('fastify-authz-cache').WarmEntry[]
`

/** Code around a marked fragment: `before` ends with a newline, so the block starts on a line of its own. */
const CONTEXTS: Record<string, { before: string, after: string }> = {
  'resolvers-entry': { before: "const resolvers: Record<string, import('fastify-authz-cache').ResolverSpec> = {\n", after: '\n}' }
}

interface Block {
  /** README line (1-based) of the opening fence. */
  line: number
  marker: string | undefined
  /** The fence's indentation, removed from every line of `code`. */
  indent: number
  code: string
}

function readmeBlocks (readme: string): Block[] {
  const lines = readme.split('\n')
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^( *)```(ts|typescript)\s*$/.exec(lines[i])
    if (open === null) continue
    const indent = open[1]
    const end = lines.findIndex((l, j) => j > i && l.trimEnd() === `${indent}\`\`\``)
    if (end === -1) throw new Error(`README.md:${i + 1}: unclosed \`\`\`ts block`)
    const marker = /^\s*<!--\s*snippet:\s*(\S+)\s*-->\s*$/.exec(lines[i - 1] ?? '')?.[1]
    const code = lines.slice(i + 1, end).map((l) => l.startsWith(indent) ? l.slice(indent.length) : l.trimStart()).join('\n')
    blocks.push({ line: i + 1, marker, indent: indent.length, code })
    i = end
  }
  return blocks
}

/** A project beside the repository's node_modules, where `fastify-authz-cache` is the package in this repository. */
function project (dir: string, files: Record<string, string>): string {
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'junction')
  const app = join(dir, 'app')
  mkdirSync(join(app, 'node_modules'), { recursive: true })
  symlinkSync(root, join(app, 'node_modules', 'fastify-authz-cache'), 'junction')
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'readme-snippets', private: true, type: 'module' }))
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      strict: true,
      target: 'ES2022',
      lib: ['ES2023'],
      types: ['node'],
      module: 'nodenext',
      moduleResolution: 'nodenext',
      // Otherwise every file of a "type": "module" package is a module, the prelude too, and its declarations are not global.
      moduleDetection: 'legacy',
      noEmit: true,
      skipLibCheck: true
    },
    files: Object.keys(files)
  }, null, 2))
  for (const [name, text] of Object.entries(files)) writeFileSync(join(app, name), text)
  return join(app, 'tsconfig.json')
}

test('every ts block of README.md compiles against the built types', { skip: existsSync(builtTypes) ? false : 'not built: npm test builds before the unit tests' }, async (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const blocks = readmeBlocks(readme)
  const files: Record<string, string> = { 'prelude.ts': PRELUDE }
  /** File name -> the block and how many wrapper lines precede its first line. */
  const sources = new Map<string, { block: Block, offset: number }>()
  const skipped: Block[] = []
  for (const block of blocks) {
    if (block.marker === 'skip') {
      skipped.push(block)
      continue
    }
    const context = block.marker === undefined ? { before: '', after: '' } : CONTEXTS[block.marker]
    if (context === undefined) {
      t.fail(`README.md:${block.line}: unknown marker <!-- snippet: ${block.marker} --> (known: skip, ${Object.keys(CONTEXTS).join(', ')})`)
      continue
    }
    const name = `readme-${block.line}.ts`
    // `export {}` makes every block a module: top-level await works, and its declarations stay its own.
    files[name] = `${context.before}${block.code}${context.after}\nexport {}\n`
    sources.set(name, { block, offset: context.before.split('\n').length - 1 })
  }
  // One file that must not compile: proves the blocks are type-checked at all.
  files['canary.ts'] = 'export const generationId: string = request.params.generationId\n'

  const dir = mkdtempSync(join(tmpdir(), 'authz-readme-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const config = ts.getParsedCommandLineOfConfigFile(project(dir, files), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => { throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n')) }
  })
  if (config === undefined) throw new Error('no tsconfig')
  const program = ts.createProgram({ rootNames: config.fileNames, options: config.options })

  const problems: Array<{ line: number, text: string }> = []
  let canaryErrors = 0
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = `TS${d.code}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
    const name = d.file === undefined ? undefined : d.file.fileName.slice(d.file.fileName.lastIndexOf('/') + 1)
    if (name === 'canary.ts') {
      canaryErrors++
      continue
    }
    const source = name === undefined ? undefined : sources.get(name)
    if (d.file === undefined || d.start === undefined || source === undefined) {
      problems.push({ line: 0, text: `${d.file?.fileName ?? 'tsconfig'}: ${message}` })
      continue
    }
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start)
    const inBlock = line - source.offset
    const code = source.block.code.split('\n')
    // A problem in the wrapper of a fragment is reported at the fence.
    const readmeLine = inBlock >= 0 && inBlock < code.length ? source.block.line + 1 + inBlock : source.block.line
    problems.push({ line: readmeLine, text: `README.md:${readmeLine}:${character + 1 + source.block.indent} ${message}\n    ${code[inBlock]?.trim() ?? '(around the block)'}` })
  }

  t.comment(`${sources.size} README blocks checked, ${skipped.length} skipped${skipped.length > 0 ? ` (lines ${skipped.map((b) => b.line).join(', ')})` : ''}`)
  t.ok(sources.size >= MIN_CHECKED, `at least ${MIN_CHECKED} README blocks checked (${sources.size} of ${blocks.length})`)
  t.ok(canaryErrors > 0, 'a block that does not compile is reported')
  for (const problem of problems.sort((a, b) => a.line - b.line)) t.fail(problem.text)
  t.equal(problems.length, 0, 'every checked README block compiles')
})
