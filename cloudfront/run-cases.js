#!/usr/bin/env node
// Runs function.js against every case of cases.json, as CloudFront would (viewer-request events),
// then checks where S3 would look: S3 decodes the URI path, reading a raw "+" as a space.
// Usage: node cloudfront/run-cases.js   (exit 0 when every case passes; prints a JSON summary)
//        node cloudfront/run-cases.js --route < requests.json   (a JSON list of request URIs in, what
//        the function did with each out: {status, uri}; for tests that compare the twins off the table)
'use strict';
const fs = require('fs');
const path = require('path');
const vm = require('vm');

const here = __dirname;
const sandbox = {};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(path.join(here, 'function.js'), 'utf8'), sandbox);

function viewerRequest(uri, querystring) {
    return {
        version: '1.0',
        context: { eventType: 'viewer-request' },
        viewer: { ip: '127.0.0.1' },
        request: { method: 'GET', uri, querystring, headers: {}, cookies: {} },
    };
}

function s3Key(uri) {
    return decodeURIComponent(uri.replace(/\+/g, ' ')).slice(1);
}

function routeEach() {
    const requests = JSON.parse(fs.readFileSync(0, 'utf8'));
    const routed = requests.map((uri) => {
        const out = sandbox.handler(viewerRequest(uri, {}));
        return out.statusCode === undefined ? { status: 200, uri: out.uri } : { status: out.statusCode };
    });
    console.log(JSON.stringify(routed));
}

function runCases() {
    const cases = JSON.parse(fs.readFileSync(path.join(here, 'cases.json'), 'utf8')).cases;
    const failures = [];
    for (const c of cases) {
        const [uri, query] = c.request.split(/\?(.*)/s);
        const querystring = {};
        for (const pair of (query || '').split('&').filter(Boolean)) {
            const [name, value] = pair.split('=');
            querystring[name] = { value: value || '' };
        }
        const out = sandbox.handler(viewerRequest(uri, querystring));
        let problem = null;
        if (c.status !== 200) {
            if (out.statusCode !== c.status) problem = `expected status ${c.status}, got ${JSON.stringify(out)}`;
        } else if (out.statusCode !== undefined) {
            problem = `expected a rewrite, got status ${out.statusCode}`;
        } else if (out.uri !== c.origin_uri) {
            problem = `expected uri ${c.origin_uri}, got ${out.uri}`;
        } else if (s3Key(out.uri) !== c.path) {
            problem = `S3 would read key ${JSON.stringify(s3Key(out.uri))}, expected ${JSON.stringify(c.path)}`;
        } else if (Object.keys(out.querystring).length !== 0) {
            problem = 'query string not dropped';
        }
        if (problem) failures.push({ name: c.name, problem });
    }
    console.log(JSON.stringify({ cases: cases.length, passed: cases.length - failures.length, failures }));
    // exitCode, not exit(): exiting at once can cut a long write to a pipe short
    process.exitCode = failures.length ? 1 : 0;
}

if (process.argv[2] === '--route') {
    routeEach();
} else {
    runCases();
}
