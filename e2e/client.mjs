// A scripted MCP client on the official TypeScript SDK, for end-to-end tests.
//
// Usage:
//   node client.mjs [options] stdio -- COMMAND [ARGS...]
//   node client.mjs [options] http URL          (streamable HTTP)
//   node client.mjs [options] sse URL           (legacy HTTP+SSE)
// Options:
//   --header "Name: value"   extra HTTP header on every request (repeatable)
//   --env NAME=VALUE         extra environment for a stdio server (repeatable)
//   --script FILE            steps as a JSON array in FILE
//   --steps JSON             steps as a JSON array on the command line
// Without --script or --steps, steps are read from stdin, one JSON object a
// line, and each is run as soon as it arrives, so a caller can act between
// steps (complete a consent page, restart something) on one MCP session.
//
// Steps:
//   {"op":"list_tools"}
//   {"op":"call","tool":NAME,"args":{...},"expect":"ok"|"error"}
//   {"op":"consent","url":AUTH_URL,"user":U,"password":P,"action":"allow"|"deny"}
//   {"op":"ping"}
//   {"op":"close"}
// Any step may carry an "id", echoed back. Each step prints one line:
//   {"id","op","ok":true,"result":...}  or  {"id","op","ok":false,"error":"..."}
// A call result also has "parsed": its first text content as JSON, if it is.
//
// Exit status: 0 every step ok, 1 connection failure, 2 usage,
// 3 some step failed (protocol error or unmet expectation).
//
// The SDK's StdioClientTransport hands the child only a handful of variables
// (HOME, PATH, ...) unless given an env, so this passes its whole
// environment on, plus --env.

import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { completeConsent } from './consent.mjs';

function usage(msg) {
  process.stderr.write(`client: ${msg}\nsee the comment at the top of client.mjs for usage\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { headers: {}, env: {}, steps: undefined };
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('--'); i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) usage(`${flag} needs a value`);
    switch (flag) {
      case '--header': {
        const colon = value.indexOf(':');
        if (colon < 1) usage(`--header ${value}: want "Name: value"`);
        opts.headers[value.slice(0, colon).trim()] = value.slice(colon + 1).trim();
        break;
      }
      case '--env': {
        const eq = value.indexOf('=');
        if (eq < 1) usage(`--env ${value}: want NAME=VALUE`);
        opts.env[value.slice(0, eq)] = value.slice(eq + 1);
        break;
      }
      case '--script':
        opts.steps = JSON.parse(readFileSync(value, 'utf8'));
        break;
      case '--steps':
        opts.steps = JSON.parse(value);
        break;
      default:
        usage(`unknown option ${flag}`);
    }
  }
  opts.transport = argv[i++];
  if (opts.transport === 'stdio') {
    if (argv[i] === '--') i++;
    opts.command = argv[i++];
    opts.args = argv.slice(i);
    if (!opts.command) usage('stdio needs a command after --');
  } else if (opts.transport === 'http' || opts.transport === 'sse') {
    opts.url = argv[i++];
    if (!opts.url) usage(`${opts.transport} needs a URL`);
  } else {
    usage('the transport must be stdio, http or sse');
  }
  if (opts.steps !== undefined && !Array.isArray(opts.steps)) usage('steps must be a JSON array');
  return opts;
}

function makeTransport(opts) {
  switch (opts.transport) {
    case 'stdio': {
      const env = {};
      for (const [k, v] of Object.entries(process.env)) {
        if (v !== undefined) env[k] = v;
      }
      return new StdioClientTransport({
        command: opts.command,
        args: opts.args,
        env: { ...env, ...opts.env },
        stderr: 'inherit',
      });
    }
    case 'http':
      return new StreamableHTTPClientTransport(new URL(opts.url), {
        requestInit: { headers: opts.headers },
      });
    case 'sse':
      // The SDK sends requestInit.headers on the event stream's GET too.
      return new SSEClientTransport(new URL(opts.url), {
        requestInit: { headers: opts.headers },
      });
  }
  throw new Error(`unknown transport ${opts.transport}`);
}

function firstTextAsJSON(result) {
  const text = result?.content?.find((c) => c.type === 'text')?.text;
  if (typeof text !== 'string') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function runStep(client, step) {
  switch (step.op) {
    case 'list_tools': {
      const tools = [];
      let cursor;
      do {
        const page = await client.listTools(cursor ? { cursor } : {});
        tools.push(...page.tools);
        cursor = page.nextCursor;
      } while (cursor);
      return { tools };
    }
    case 'call': {
      if (!step.tool) throw new Error('call needs "tool"');
      const result = await client.callTool({ name: step.tool, arguments: step.args ?? {} });
      const isError = result.isError === true;
      if (step.expect === 'ok' && isError) {
        const e = new Error(`${step.tool} returned isError: ${result.content?.[0]?.text ?? ''}`);
        e.result = result;
        throw e;
      }
      if (step.expect === 'error' && !isError) {
        const e = new Error(`${step.tool} succeeded, an error was expected`);
        e.result = result;
        throw e;
      }
      return { isError, content: result.content, parsed: firstTextAsJSON(result) };
    }
    case 'consent':
      return completeConsent(step.url, step.user, step.password, step.action ?? 'allow');
    case 'ping':
      return client.ping();
    case 'close':
      await client.close();
      return {};
  }
  throw new Error(`unknown op ${JSON.stringify(step.op)}`);
}

// Yields steps from opts.steps or from stdin lines.
async function* steps(opts) {
  if (opts.steps) {
    yield* opts.steps;
    return;
  }
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.trim() === '') continue;
    yield JSON.parse(line);
  }
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const client = new Client({ name: 'servicenow-mcp-e2e', version: '0.0.0' });
  try {
    await client.connect(makeTransport(opts));
  } catch (err) {
    emit({ op: 'connect', ok: false, error: String(err?.message ?? err) });
    return 1;
  }
  emit({
    op: 'connect',
    ok: true,
    result: { server: client.getServerVersion(), capabilities: client.getServerCapabilities() },
  });

  let failed = false;
  let closed = false;
  let index = 0;
  for await (const step of steps(opts)) {
    const id = step.id ?? index;
    index++;
    try {
      const result = await runStep(client, step);
      emit({ id, op: step.op, ok: true, result });
    } catch (err) {
      failed = true;
      const out = { id, op: step.op, ok: false, error: String(err?.message ?? err) };
      if (err?.result) out.result = err.result;
      emit(out);
    }
    if (step.op === 'close') {
      closed = true;
      break;
    }
  }
  if (!closed) await client.close();
  return failed ? 3 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`client: ${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
