// connect-node, the Connect protocol's Node.js client, against the real conduit binary:
//   node tests/interop/connect/client.mjs HOST:PORT DESCRIPTORS.binpb
// The services come from the descriptor set at run time (buf build), not from generated
// code: what is tested is the server's wire, as every Connect client sees it. JSON over
// HTTP/1.1 with GET for side-effect-free methods, then protobuf over HTTP/2 (h2c).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const [addr, descriptors] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptors)));
const service = (name) => {
  const found = registry.getService(`conduit.v1.${name}`);
  assert.ok(found, `conduit.v1.${name} is in the descriptor set`);
  return found;
};

let passed = 0;
let failed = 0;
async function check(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name}: ${error?.stack ?? error}`);
  }
}

const transports = {
  "json over HTTP/1.1, GET for reads": createConnectTransport({
    baseUrl: `http://${addr}`,
    httpVersion: "1.1",
    useHttpGet: true,
  }),
  "protobuf over h2c": createConnectTransport({
    baseUrl: `http://${addr}`,
    httpVersion: "2",
    useBinaryFormat: true,
  }),
};

for (const [shape, transport] of Object.entries(transports)) {
  const users = createClient(service("UserService"), transport);
  const articles = createClient(service("ArticleService"), transport);
  const profiles = createClient(service("ProfileService"), transport);
  const tags = createClient(service("TagService"), transport);
  const username = `connectnode${Date.now()}${Math.floor(Math.random() * 1e6)}`;
  let token = "";

  await check(`${shape}: register, then read the current user`, async () => {
    const registered = await users.register({
      username,
      email: `${username}@example.com`,
      password: "password123",
    });
    token = registered.user.token;
    assert.ok(token.length > 20);
    const me = await users.getCurrentUser({}, { headers: { authorization: `Token ${token}` } });
    assert.equal(me.user.username, username);
  });

  await check(`${shape}: publish an article and list it by tag`, async () => {
    const tag = `t${username}`;
    const created = await articles.createArticle(
      { title: `Connect ${username}`, description: "d", body: "b", tagList: [tag] },
      { headers: { authorization: `Token ${token}` } },
    );
    assert.ok(created.article.slug);
    const listed = await articles.listArticles({ tag });
    assert.equal(listed.articles.length, 1);
    assert.equal(listed.articles[0].slug, created.article.slug);
    const all = await tags.listTags({});
    assert.ok(all.tags.includes(tag));
  });

  await check(`${shape}: a missing profile is NOT_FOUND with its ErrorInfo`, async () => {
    const error = await profiles.getProfile({ username: `${username}x` }).then(
      () => assert.fail("no error"),
      (e) => ConnectError.from(e),
    );
    assert.equal(error.code, Code.NotFound);
    const info = error.details.find((d) => d.type === "google.rpc.ErrorInfo");
    assert.ok(info, "an ErrorInfo detail");
    assert.equal(info.debug.reason, "PROFILE_NOT_FOUND");
    assert.ok(info.debug.metadata.request_id, "the request id is quoted");
  });

  await check(`${shape}: no token is UNAUTHENTICATED`, async () => {
    const error = await users.getCurrentUser({}).then(
      () => assert.fail("no error"),
      (e) => ConnectError.from(e),
    );
    assert.equal(error.code, Code.Unauthenticated);
  });
}

console.log(`connect-node: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
