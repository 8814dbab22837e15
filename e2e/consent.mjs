// Completes the sandbox instance's OAuth consent page the way a browser
// would: open the authorization URL, fill in the sign-in form, press Allow
// (or Deny), then follow the redirect to the MCP server's callback and read
// the page it shows. Plain fetch with manual redirects, so every hop is seen.
//
// As a library: import { completeConsent } from './consent.mjs'.
// As a command:  node consent.mjs AUTH_URL USER PASSWORD [allow|deny]
// prints one JSON object: {form_status, redirect, callback_status, page}.

import { pathToFileURL } from 'node:url';

const MAX_REDIRECTS = 5;

// Reads the value of attribute `name` from one HTML tag's source text.
function attr(tag, name) {
  const m = tag.match(new RegExp(`\\b${name}\\s*=\\s*("([^"]*)"|'([^']*)')`, 'i'));
  return m ? unescapeHTML(m[2] ?? m[3]) : undefined;
}

function unescapeHTML(s) {
  return s
    .replace(/&#(\d+);/g, (_, n) => String.fromCodePoint(Number(n)))
    .replace(/&#x([0-9a-f]+);/gi, (_, n) => String.fromCodePoint(parseInt(n, 16)))
    .replace(/&quot;/g, '"')
    .replace(/&#39;|&apos;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

// Finds the sign-in form: its action and the hidden fields to send back.
function parseForm(html) {
  const open = html.match(/<form\b[^>]*>/i);
  if (!open) {
    throw new Error(`consent page has no <form>: ${html.slice(0, 300)}`);
  }
  const end = html.indexOf('</form>', open.index);
  const body = html.slice(open.index, end < 0 ? undefined : end);
  const hidden = {};
  for (const tag of body.match(/<input\b[^>]*>/gi) ?? []) {
    if ((attr(tag, 'type') ?? '').toLowerCase() === 'hidden') {
      hidden[attr(tag, 'name')] = attr(tag, 'value') ?? '';
    }
  }
  return {
    action: attr(open[0], 'action') ?? '',
    method: (attr(open[0], 'method') ?? 'get').toLowerCase(),
    hidden,
  };
}

// Follows redirects by hand with GET, returning the last response and URL.
async function getFollowing(url) {
  let current = url;
  for (let i = 0; i <= MAX_REDIRECTS; i++) {
    const res = await fetch(current, { redirect: 'manual' });
    const loc = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && loc) {
      await res.arrayBuffer();
      current = new URL(loc, current).toString();
      continue;
    }
    return { res, url: current };
  }
  throw new Error(`more than ${MAX_REDIRECTS} redirects from ${url}`);
}

/**
 * Signs in on the consent page at authURL and answers it.
 * @returns {Promise<{form_status:number, redirect:string, callback_status:number, page:string}>}
 */
export async function completeConsent(authURL, user, password, action = 'allow') {
  const { res: formRes, url: formURL } = await getFollowing(authURL);
  const formHTML = await formRes.text();
  if (formRes.status !== 200) {
    throw new Error(`consent page answered ${formRes.status}: ${formHTML.slice(0, 300)}`);
  }
  const form = parseForm(formHTML);
  if (form.method !== 'post') {
    throw new Error(`consent form method is ${form.method}, want post`);
  }

  const fields = new URLSearchParams(form.hidden);
  fields.set('user_name', user);
  fields.set('user_password', password);
  fields.set('action', action);
  const post = await fetch(new URL(form.action, formURL), {
    method: 'POST',
    redirect: 'manual',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: fields.toString(),
  });
  const postText = await post.text();
  const redirect = post.headers.get('location');
  if (post.status < 300 || post.status >= 400 || !redirect) {
    throw new Error(`consent form answered ${post.status} without a redirect: ${postText.slice(0, 300)}`);
  }

  const callbackURL = new URL(redirect, formURL).toString();
  const { res: cb } = await getFollowing(callbackURL);
  return {
    form_status: post.status,
    redirect: callbackURL,
    callback_status: cb.status,
    page: await cb.text(),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [url, user, password, action = 'allow'] = process.argv.slice(2);
  if (!url || !user || password === undefined) {
    process.stderr.write('usage: node consent.mjs AUTH_URL USER PASSWORD [allow|deny]\n');
    process.exit(2);
  }
  try {
    const out = await completeConsent(url, user, password, action);
    process.stdout.write(JSON.stringify(out) + '\n');
  } catch (err) {
    process.stderr.write(`consent: ${err.message}\n`);
    process.exit(1);
  }
}
