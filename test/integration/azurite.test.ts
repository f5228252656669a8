import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { SOURCE_ACCOUNT, testStorage, uniqueName } from "../support/testEnv";

test("the shared Azurite serves the source account with its key", async () => {
  const s = testStorage();
  const svc = new BlobServiceClient(
    s.blobUrl(SOURCE_ACCOUNT),
    new StorageSharedKeyCredential(SOURCE_ACCOUNT, s.keys[SOURCE_ACCOUNT]),
  );
  const c = svc.getContainerClient(uniqueName("smoke"));
  await c.create();
  expect((await c.getProperties())._response.status).toBe(200);
});
