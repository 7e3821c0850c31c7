// CloudFront Function (runtime cloudfront-js-2.0), viewer request, on the mirror's distribution.
// The origin is the bucket with origin path /<prefix>pub, so "/dir/" already names the directory's
// index page and no rewrite is needed for it. What this function does:
//   - decodes the path once, strictly, and refuses (400) malformed escapes, invalid UTF-8, NUL,
//     encoded slashes and raw non-ASCII or control characters;
//   - resolves the decoded path as nginx does (RFC 3986 section 5.2.4, after merging slashes): "."
//     segments go, ".." removes the segment before it and is refused (400) when nothing is left to
//     remove. Resolving after decoding makes %2e%2e a ".." like any other, so the key never holds a
//     dot segment however it was spelt (apt asks for /debian/./InRelease); a path ending in a dot
//     segment names a directory (/a/b/.. is /a/);
//   - re-encodes every segment canonically, so "+" reaches S3 as %2B (S3 reads a raw "+" in a path
//     as a space: the apt-on-S3 bug) and every other name reaches exactly its key;
//   - refuses (414) paths longer than S3's 1,024-byte key limit;
//   - drops the query string: S3 would act on ?versionId=, ?acl and friends.
// Its Python twin is mirrorkeeper/serve/routing.py; cases.json drives the tests of both.

var MAX_PATH_BYTES = 1024;
var REASONS = { 400: 'Bad Request', 414: 'URI Too Long' };

function utf8Length(text) {
    var bytes = 0;
    for (var i = 0; i < text.length; i++) {
        var code = text.charCodeAt(i);
        if (code < 0x80) {
            bytes += 1;
        } else if (code < 0x800) {
            bytes += 2;
        } else if (code >= 0xd800 && code <= 0xdbff) {
            bytes += 4; // a surrogate pair is one 4-byte character
            i++;
        } else {
            bytes += 3;
        }
    }
    return bytes;
}

function route(rawPath) {
    if (rawPath.charAt(0) !== '/' || /[^\x21-\x7e]/.test(rawPath)) {
        return { status: 400 };
    }
    if (/%(?![0-9A-Fa-f]{2})/.test(rawPath) || /%2f/i.test(rawPath)) {
        return { status: 400 };
    }
    var path;
    try {
        path = decodeURIComponent(rawPath);
    } catch (e) {
        return { status: 400 }; // invalid UTF-8
    }
    if (path.indexOf('\u0000') >= 0) {
        return { status: 400 };
    }
    var parts = path.slice(1).split('/');
    var kept = [];
    for (var i = 0; i < parts.length; i++) {
        if (parts[i] === '..') {
            if (kept.length === 0) {
                return { status: 400 }; // above the served root
            }
            kept.pop();
        } else if (parts[i] !== '' && parts[i] !== '.') {
            kept.push(parts[i]);
        }
    }
    // RFC 3986: a final "." or ".." leaves the trailing slash, so the result is still a directory URL
    var last = parts[parts.length - 1];
    var trailing = kept.length > 0 && (last === '' || last === '.' || last === '..') ? '/' : '';
    if (utf8Length(kept.join('/') + trailing) > MAX_PATH_BYTES) {
        return { status: 414 };
    }
    return { status: 200, uri: '/' + kept.map(encodeURIComponent).join('/') + trailing };
}

function refusal(status) {
    var reason = REASONS[status];
    return {
        statusCode: status,
        statusDescription: reason,
        headers: {
            'content-type': { value: 'text/html; charset=utf-8' },
            'cache-control': { value: 'no-cache' }
        },
        body: {
            encoding: 'text',
            data: '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>' + status + ' ' + reason +
                '</title></head><body><h1>' + reason + '</h1><p>That path cannot name a file of this mirror.</p></body></html>\n'
        }
    };
}

function handler(event) {
    var request = event.request;
    var routed = route(request.uri);
    if (routed.status !== 200) {
        return refusal(routed.status);
    }
    request.uri = routed.uri;
    request.querystring = {};
    return request;
}
