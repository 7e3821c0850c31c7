#!/usr/bin/env node
// Runs function.js against every case of cases.json, as CloudFront would (viewer-request events),
// then checks where S3 would look: S3 decodes the URI path, reading a raw "+" as a space.
// Usage: node cloudfront/run-cases.js   (exit 0 when every case passes; prints a JSON summary)
'use strict';
const fs = require('fs');
const path = require('path');
const vm = require('vm');

const here = __dirname;
const sandbox = {};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(path.join(here, 'function.js'), 'utf8'), sandbox);
const cases = JSON.parse(fs.readFileSync(path.join(here, 'cases.json'), 'utf8')).cases;

function s3Key(uri) {
    return decodeURIComponent(uri.replace(/\+/g, ' ')).slice(1);
}

const failures = [];
for (const c of cases) {
    const [uri, query] = c.request.split(/\?(.*)/s);
    const querystring = {};
    for (const pair of (query || '').split('&').filter(Boolean)) {
        const [name, value] = pair.split('=');
        querystring[name] = { value: value || '' };
    }
    const event = {
        version: '1.0',
        context: { eventType: 'viewer-request' },
        viewer: { ip: '127.0.0.1' },
        request: { method: 'GET', uri, querystring, headers: {}, cookies: {} },
    };
    const out = sandbox.handler(event);
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
process.exit(failures.length ? 1 : 0);
