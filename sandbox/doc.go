// Package sandbox is a simulated ServiceNow instance for tests, benchmarks
// and trying servicenow-mcp without a real instance. It imports nothing from
// the rest of the product, so it cannot agree with a client bug by accident:
// it follows ServiceNow's documented behaviour.
//
// # OAuth
//
// GET /oauth_auth.do checks client_id, redirect_uri (exact match against
// Options.RedirectURIs; a mismatch shows an error page instead of
// ServiceNow's fall-back to the first registered URI, so that client bugs
// show up), response_type=code, state (required unless
// Options.StateOptional: "Missing State parameter in request") and PKCE
// (code_challenge_method must be S256 when a challenge is sent). It then
// answers a plain HTML page without JavaScript that holds one form:
//
//	<form method="post" action="/oauth_auth.do">
//	  hidden   sysparm_request  opaque id of the validated request
//	  text     user_name
//	  password user_password
//	  submit   action=allow  |  action=deny
//
// A client without a browser completes sign-in by POSTing
// sysparm_request, user_name, user_password and action=allow as
// application/x-www-form-urlencoded to /oauth_auth.do. A wrong password
// shows the form again with an error (HTTP 200); allow answers 302 to
// redirect_uri?code=...&state=..., deny 302 to
// redirect_uri?error=access_denied&state=....
//
// POST /oauth_token.do accepts form bodies only and the grants
// authorization_code, refresh_token and password. The client secret goes in
// the form (HTTP Basic is accepted too). Every refusal is HTTP 401
// {"error_description":"access_denied","error":"server_error"}. Refresh
// returns the same refresh token unless rotation is on; a rotated-out
// refresh token presented again revokes its whole token family, and so does
// a second use of an authorization code. /oauth_revoke_token.do?token=
// (GET or POST, no auth) expires a token; revoking a refresh token also
// kills the access tokens of its family.
//
// # REST APIs
//
// /api/* takes "Authorization: Bearer <access token>" (or Basic with a
// seeded user's password). Served: the Table API (/api/now/table,
// /api/now/v1/table, /api/now/v2/table), the Aggregate API
// (/api/now/stats), the Attachment API, the Knowledge API
// (/api/sn_km_api/knowledge/articles, switched off by
// Options.NoKnowledgeAPI) and Service Catalog items and order_now
// (/api/sn_sc/servicecatalog/items). Any other /api path answers 400
// "Requested URI does not represent any resource", which is also what an
// absent plugin's route answers.
//
// Journal fields (comments, work_notes) are not stored on the record: a
// write appends a sys_journal_field row, and reading the field gives ""
// as its value and the rendered journal as its display value.
//
// Encoded queries follow ServiceNow: a condition on an unknown field or with
// an unknown operator is ignored (more rows come back); "!=", NOT LIKE and
// NOT IN do not match empty values; LIKE, STARTSWITH and ENDSWITH are
// case-insensitive and compare a reference's display value.
//
// # Admin endpoints
//
// GET /sandbox/stats (counters) and GET /sandbox/users are open; POST
// /sandbox/stats/reset, GET|PUT /sandbox/faults and POST
// /sandbox/revoke[?user=NAME] answer loopback clients only. See Faults for
// the JSON form of the switches.
package sandbox
