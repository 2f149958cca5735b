// An independent DPoP client for tokengate's tests: RFC 9449 as panva's oauth4webapi and jose
// implement it, none of it written here. Started by tests/dpop; prints one JSON object.
//
//   node client.mjs flow   '{"token_endpoint": .., "issuer": .., "client_id": .., "secret": .., "resource": .., "alg": "ES256"}'
//   node client.mjs public '{"token_endpoint": .., "issuer": .., "client_id": .., "username": .., "password": .., "resource": ..}'
//   node client.mjs proofs '{"alg": "ES256", "private_jwk": optional, "proofs": [{"htm": .., "htu": .., "token": .., ...}]}'
//   node client.mjs client_auth '{"token_endpoint": .., "issuer": .., "client_id": .., "method": "basic|post|private_key_jwt|none|tls",
//                                 "secret": .., "private_key_pem": .., "kid": .., "aud": .., "jti": .., "cert_pem": .., "key_pem": ..}'
//
// The gateway's self-signed certificate is trusted through NODE_EXTRA_CA_CERTS.
import * as oauth from 'oauth4webapi';
import * as jose from 'jose';
import * as https from 'node:https';
import { createPrivateKey } from 'node:crypto';

const [mode, arg] = process.argv.slice(2);
const input = JSON.parse(arg);

/// A request, retried once when the server asks for a DPoP nonce (the handle has cached it).
async function withNonceRetry(send, process) {
  let response = await send();
  try {
    return { value: await process(response), retried: false };
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err;
    response = await send();
    return { value: await process(response), retried: true };
  }
}

async function thumbprintOf(keyPair) {
  return jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey));
}

/// GET the protected resource with the DPoP-bound token, as oauth4webapi sends it; retried once
/// when the gateway answers use_dpop_nonce (the handle has cached the nonce from that answer).
async function callResource(token, DPoP) {
  const send = () => oauth.protectedResourceRequest(token, 'GET', new URL(input.resource), new Headers(), null, { DPoP });
  let retried = false;
  let response;
  try {
    response = await send();
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err;
    retried = true;
    response = await send();
  }
  return { status: response.status, body: await response.text(), retried };
}

async function flow() {
  const as = { issuer: input.issuer, token_endpoint: input.token_endpoint };
  const client = { client_id: input.client_id };
  const keyPair = await oauth.generateKeyPair(input.alg ?? 'ES256');
  const DPoP = oauth.DPoP(client, keyPair);
  const send = () =>
    oauth.clientCredentialsGrantRequest(as, client, oauth.ClientSecretBasic(input.secret), { scope: input.scope ?? '' }, { DPoP });
  const { value: tokens, retried } = await withNonceRetry(send, (r) => oauth.processClientCredentialsResponse(as, client, r));
  const resource = await callResource(tokens.access_token, DPoP);
  return {
    token_type: tokens.token_type,
    access_token: tokens.access_token,
    jkt: await thumbprintOf(keyPair),
    token_retried: retried,
    resource,
  };
}

async function publicFlow() {
  const as = { issuer: input.issuer, token_endpoint: input.token_endpoint };
  const client = { client_id: input.client_id };
  const keyPair = await oauth.generateKeyPair('ES256');
  const DPoP = oauth.DPoP(client, keyPair);
  const params = { username: input.username, password: input.password, scope: input.scope ?? '' };
  const login = await oauth.genericTokenEndpointRequest(as, client, oauth.None(), 'password', params, { DPoP });
  const tokens = await oauth.processGenericTokenEndpointResponse(as, client, login);
  const refreshed = await oauth.processRefreshTokenResponse(
    as,
    client,
    await oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token, { DPoP }),
  );
  // The next refresh token, presented with another key's proofs: refused (RFC 9449 5).
  const thief = oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
  const stolen = await oauth.refreshTokenGrantRequest(as, client, oauth.None(), refreshed.refresh_token, { DPoP: thief });
  const stolenBody = await stolen.json();
  // And the rightful holder can still use it: the refused attempt consumed nothing.
  const again = await oauth.processRefreshTokenResponse(
    as,
    client,
    await oauth.refreshTokenGrantRequest(as, client, oauth.None(), refreshed.refresh_token, { DPoP }),
  );
  return {
    jkt: await thumbprintOf(keyPair),
    token_type: tokens.token_type,
    refreshed_type: refreshed.token_type,
    access_token: again.access_token,
    stolen_status: stolen.status,
    stolen_error: stolenBody.error,
    resource: await callResource(again.access_token, DPoP),
  };
}

/// Proofs made with jose, including the malformed ones a test needs (each spec says how).
async function proofs() {
  const alg = input.alg ?? 'ES256';
  let privateJwk = input.private_jwk;
  if (!privateJwk) {
    const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
    privateJwk = await jose.exportJWK(privateKey);
  }
  const privateKey = await jose.importJWK(privateJwk, alg);
  const { d, p, q, dp, dq, qi, ...publicJwk } = privateJwk;
  const other = await jose.generateKeyPair(alg, { extractable: true });
  const otherPublic = await jose.exportJWK(other.publicKey);
  const now = Math.floor(Date.now() / 1000);
  const out = [];
  for (const spec of input.proofs) {
    const claims = { htm: spec.htm, htu: spec.htu, iat: now + (spec.iat_offset ?? 0), jti: spec.jti ?? crypto.randomUUID() };
    if (spec.token) claims.ath = jose.base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(spec.token))));
    if (spec.nonce) claims.nonce = spec.nonce;
    if (spec.unsigned) {
      out.push(new jose.UnsecuredJWT(claims).encode());
      continue;
    }
    if (spec.hs256) {
      const secret = crypto.getRandomValues(new Uint8Array(32));
      const jwk = { kty: 'oct', k: jose.base64url.encode(secret) };
      out.push(await new jose.SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk }).sign(secret));
      continue;
    }
    const jwk = spec.private_in_header ? privateJwk : spec.other_jwk ? otherPublic : publicJwk;
    const header = { alg, typ: spec.typ ?? 'dpop+jwt', jwk };
    const key = spec.signed_by_other ? other.privateKey : privateKey;
    out.push(await new jose.SignJWT(claims).setProtectedHeader(header).sign(key));
  }
  return { private_jwk: privateJwk, jkt: await jose.calculateJwkThumbprint(publicJwk), proofs: out };
}

/// fetch over node:https with a client certificate, for tls_client_auth (RFC 8705): the global
/// fetch cannot present one. oauth4webapi only needs a Response back.
function fetchWithCertificate(cert, key) {
  return (url, options) =>
    new Promise((resolve, reject) => {
      const req = https.request(url, { method: options.method, headers: options.headers, cert, key }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const headers = new Headers();
          for (const [k, v] of Object.entries(res.headers)) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
          resolve(new Response(Buffer.concat(chunks), { status: res.statusCode, headers }));
        });
      });
      req.on('error', reject);
      req.end(options.body?.toString());
    });
}

/// One client credentials grant, the client authenticating as `input.method` says, through
/// oauth4webapi's request and response processing: the token, or what oauth4webapi threw.
async function clientAuth() {
  const as = { issuer: input.issuer, token_endpoint: input.token_endpoint };
  const client = { client_id: input.client_id };
  let auth;
  const options = {};
  switch (input.method) {
    case 'basic':
      auth = oauth.ClientSecretBasic(input.secret);
      break;
    case 'post':
      auth = oauth.ClientSecretPost(input.secret);
      break;
    case 'private_key_jwt': {
      // Any PEM the test wrote (PKCS#8 or SEC1), as the non-extractable CryptoKey oauth4webapi wants.
      const jwk = createPrivateKey(input.private_key_pem).export({ format: 'jwk' });
      const key = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
      const modify = (_header, payload) => {
        if (input.aud) payload.aud = input.aud;
        if (input.jti) payload.jti = input.jti;
      };
      auth = oauth.PrivateKeyJwt({ key, kid: input.kid }, { [oauth.modifyAssertion]: modify });
      break;
    }
    case 'none':
      auth = oauth.None();
      break;
    case 'tls':
      auth = oauth.TlsClientAuth();
      if (input.cert_pem) options[oauth.customFetch] = fetchWithCertificate(input.cert_pem, input.key_pem);
      break;
    default:
      throw new Error(`unknown method ${input.method}`);
  }
  const response = await oauth.clientCredentialsGrantRequest(as, client, auth, { scope: input.scope ?? '' }, options);
  const tokens = await oauth.processClientCredentialsResponse(as, client, response);
  return { token_type: tokens.token_type, access_token: tokens.access_token };
}

const run = { flow, public: publicFlow, proofs, client_auth: clientAuth }[mode];
if (!run) {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
try {
  console.log(JSON.stringify(await run()));
} catch (err) {
  // `name` is oauth4webapi's error class (ResponseBodyError, WWWAuthenticateChallengeError, ...);
  // a challenge error's cause is the parsed challenges.
  const schemes = Array.isArray(err?.cause) ? err.cause.map((c) => c.scheme) : undefined;
  console.log(
    JSON.stringify({ failed: String(err), name: err?.name, error: err?.error, status: err?.status, schemes, cause: String(err?.cause ?? '') }),
  );
  process.exit(1);
}
