export { AuthzCache } from './cache.js'
