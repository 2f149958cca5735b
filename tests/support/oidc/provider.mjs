// A real OpenID provider (panva's oidc-provider) for tokengate's remote-JWKS tests, started by
// tests/support/oidc_provider.rs. It issues client-credentials JWT access tokens for one resource
// server and publishes its keys at /jwks (discovery at /.well-known/openid-configuration).
// oidc-provider is pinned to 8.8.1, the last release for Node.js 18/20 (9.x wants Node.js 22+).
// Its in-memory adapter warning on stderr is expected: nothing here needs stored state.
//
// Environment (the first four are required):
//   OIDC_PORT           port to listen on (HTTPS), on OIDC_HOST
//   OIDC_TLS_CERT       PEM file: the server certificate chain (leaf first)
//   OIDC_TLS_KEY        PEM file: its private key
//   OIDC_JWKS_FILE      JSON file with the private JWK Set; created with one key when missing.
//                       The first key of the token algorithm's type signs; the others are only
//                       published. The /__test/keys/* endpoints rewrite it (so a restart keeps
//                       the keys).
//   OIDC_HOST           listen address (default 127.0.0.1)
//   OIDC_ISSUER         issuer (default https://localhost:<OIDC_PORT>)
//   OIDC_CLIENTS        static clients, "id:secret" separated by commas (default svc:svc-secret);
//                       client_credentials only, client_secret_basic
//   OIDC_RESOURCE       the resource indicator (default urn:api); it is also the default
//                       resource when a request names none
//   OIDC_AUDIENCE       the "aud" of its access tokens (default api)
//   OIDC_SCOPE          the scopes the resource server knows (default "read write")
//   OIDC_TOKEN_ALG      RS256 (default) or ES256: the access tokens' signing algorithm and the
//                       type of the keys this script generates
//   OIDC_TOKEN_TTL      access token lifetime in seconds (default 300)
//   OIDC_JWKS_MAX_AGE   when set, /jwks answers with "Cache-Control: max-age=<N>"; unset,
//                       oidc-provider sends no Cache-Control on /jwks at all
//
// Test-only endpoints (served here, in front of oidc-provider; never forwarded to it):
//   GET  /__test/jwks_hits          {"hits": N}: GET requests of /jwks since this process started
//   POST /__test/keys/add           a new key goes first (it signs from now on), the others stay
//                                   published; answers {"kid": new, "kids": [...]}
//   POST /__test/keys/drop_old      only the first (signing) key remains; answers {"kids": [...]}
//   POST /__test/jwks_max_age?seconds=N   sets (or, without seconds, clears) the Cache-Control
// The key endpoints write OIDC_JWKS_FILE, then swap in a new Provider built from it: no restart.
//
// Prints "ready <issuer>" on stdout once listening. On SIGTERM/SIGINT it stops listening, drops
// its connections, prints "jwks_hits <N>" and exits 0.

import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider, { errors } from 'oidc-provider';

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`provider.mjs: ${name} is required`);
    process.exit(2);
  }
  return v;
}

const port = Number(need('OIDC_PORT'));
const tlsCert = readFileSync(need('OIDC_TLS_CERT'));
const tlsKey = readFileSync(need('OIDC_TLS_KEY'));
const jwksFile = need('OIDC_JWKS_FILE');
const host = process.env.OIDC_HOST || '127.0.0.1';
const issuer = process.env.OIDC_ISSUER || `https://localhost:${port}`;
const clients = (process.env.OIDC_CLIENTS || 'svc:svc-secret').split(',').map((pair) => {
  const i = pair.indexOf(':');
  if (i < 1) throw new Error(`OIDC_CLIENTS: "${pair}" is not id:secret`);
  return [pair.slice(0, i), pair.slice(i + 1)];
});
const resource = process.env.OIDC_RESOURCE || 'urn:api';
const audience = process.env.OIDC_AUDIENCE || 'api';
const scope = process.env.OIDC_SCOPE || 'read write';
const alg = process.env.OIDC_TOKEN_ALG || 'RS256';
if (alg !== 'RS256' && alg !== 'ES256') throw new Error(`OIDC_TOKEN_ALG: ${alg} is not RS256 or ES256`);
const kty = alg === 'RS256' ? 'RSA' : 'EC';
const tokenTtl = Number(process.env.OIDC_TOKEN_TTL || 300);
let jwksMaxAge = process.env.OIDC_JWKS_MAX_AGE ?? null;

/** A fresh private JWK for `alg`, with a random kid. */
function newKey() {
  const { privateKey } = alg === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(9).toString('base64url'), alg, use: 'sig' };
}

function readKeys() {
  return JSON.parse(readFileSync(jwksFile, 'utf8')).keys;
}

/** Writes the set whole (temporary file, then rename): a reader never sees half a file. */
function writeKeys(keys) {
  writeFileSync(`${jwksFile}.tmp`, `${JSON.stringify({ keys }, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${jwksFile}.tmp`, jwksFile);
}

function makeProvider(keys) {
  if (!keys.some((k) => k.kty === kty)) throw new Error(`${jwksFile} has no ${kty} key for ${alg}`);
  const p = new Provider(issuer, {
    clients: clients.map(([id, secret]) => ({
      client_id: id,
      client_secret: secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys },
    // Only ever used to sign the (unused) interaction cookies; random per process is fine.
    cookies: { keys: [randomBytes(16).toString('hex')] },
    ttl: { ClientCredentials: tokenTtl },
    clientDefaults: { id_token_signed_response_alg: alg },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, indicator) => {
          if (indicator !== resource) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
          return { scope, audience, accessTokenTTL: tokenTtl, accessTokenFormat: 'jwt', jwt: { sign: { alg } } };
        },
      },
    },
  });
  p.on('server_error', (ctx, err) => console.error('provider.mjs server_error:', err));
  // Documented post-middleware: only adds the header when asked (oidc-provider sends none).
  p.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/jwks' && jwksMaxAge !== null) ctx.set('cache-control', `max-age=${jwksMaxAge}`);
  });
  return { provider: p, handle: p.callback() };
}

if (!existsSync(jwksFile)) writeKeys([newKey()]);
let current = makeProvider(readKeys());
let jwksHits = 0;

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Rewrites the key file with `change(keys)` and swaps in a provider built from it. */
function rekey(change) {
  const keys = change(readKeys());
  const next = makeProvider(keys);
  writeKeys(keys);
  current = next;
  return keys.map((k) => k.kid);
}

function testEndpoint(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  if (route === 'GET /__test/jwks_hits') return json(res, 200, { hits: jwksHits });
  if (route === 'POST /__test/keys/add') {
    const key = newKey();
    const kids = rekey((keys) => [key, ...keys]);
    return json(res, 200, { kid: key.kid, kids });
  }
  if (route === 'POST /__test/keys/drop_old') return json(res, 200, { kids: rekey((keys) => keys.slice(0, 1)) });
  if (route === 'POST /__test/jwks_max_age') {
    const s = url.searchParams.get('seconds');
    jwksMaxAge = s === null || s === '' ? null : String(Number(s));
    return json(res, 200, { max_age: jwksMaxAge });
  }
  return json(res, 404, { error: `no test endpoint ${route}` });
}

const server = createServer({ cert: tlsCert, key: tlsKey }, (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname.startsWith('/__test/')) {
    try {
      testEndpoint(req, res, url);
    } catch (err) {
      console.error('provider.mjs test endpoint:', err);
      json(res, 500, { error: String(err) });
    }
    return;
  }
  if (req.method === 'GET' && url.pathname === '/jwks') jwksHits += 1;
  current.handle(req, res);
});

server.on('error', (err) => {
  console.error(`provider.mjs: ${err.message}`);
  process.exit(1);
});

server.listen(port, host, () => console.log(`ready ${issuer}`));

function shutdown() {
  server.close();
  server.closeAllConnections();
  console.log(`jwks_hits ${jwksHits}`);
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
