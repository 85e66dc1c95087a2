// A real OpenID Connect provider on loopback for the console's tests (panva/oidc-provider,
// OpenID Certified): discovery, PKCE, signed ID tokens, userinfo, and its development login
// and consent pages, which the browser test fills in like a person would.
//
//   node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI ACCOUNTS_JSON
//
// ACCOUNTS_JSON maps a login name to {"name": ..., "roles": [...]}; the login name is the
// subject, and the roles go out in the mailveil_roles claim.
import Provider from "oidc-provider";

const [port, clientId, clientSecret, redirectUri, accountsJson] = process.argv.slice(2);
const accounts = JSON.parse(accountsJson);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  claims: { openid: ["sub"], profile: ["name", "mailveil_roles"] },
  conformIdTokenClaims: false,
  cookies: { keys: ["console-tests-only"] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  async findAccount(_ctx, id) {
    const known = accounts[id];
    if (!known) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: known.name, mailveil_roles: known.roles };
      },
    };
  },
});

const server = provider.listen(Number(port), "127.0.0.1", () => {
  process.stdout.write(`ready ${issuer}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
