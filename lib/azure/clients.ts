/**
 * The composition root for storage: the only place that builds SDK clients and chooses their
 * credentials. Everything else receives clients from here. Accounts named in STORAGE_ACCOUNT_KEYS
 * use their shared key; every other account uses DefaultAzureCredential (a managed identity in
 * Azure, the developer's login elsewhere). SDK retries are off: `withRetry` is the one policy.
 */
import { DefaultAzureCredential, type TokenCredential } from "@azure/identity";
import {
  BlobSASPermissions,
  BlobServiceClient,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential,
  type PageBlobClient,
  type StoragePipelineOptions,
} from "@azure/storage-blob";
import { AzureNamedKeyCredential, TableClient } from "@azure/data-tables";
import { QueueClient, StorageSharedKeyCredential as QueueSharedKeyCredential } from "@azure/storage-queue";
import type { Config } from "../config";
import type { AccountLocation, BlobLocation } from "./urls";

/** How a server-side copy reads its source: a URL with a short-lived read-only SAS, or a bearer token. */
export interface SourceAuthorization {
  url: string;
  bearer?: string;
}

/** How long a source credential for Put Page From URL lives: one chunk takes seconds; an hour covers retries and slow runs without leaving a long-lived secret. */
const SOURCE_SAS_MINUTES = 60;

export class StorageClients {
  private readonly services = new Map<string, BlobServiceClient>();
  private tokenCredential?: TokenCredential;

  constructor(readonly config: Config) {}

  private pipelineOptions(): StoragePipelineOptions {
    return { retryOptions: { maxTries: 1 }, keepAliveOptions: { enable: true } };
  }

  /** A token credential, created once (it caches tokens). */
  identity(): TokenCredential {
    const clientId = this.config.storage?.kind === "identity" ? this.config.storage.clientId : undefined;
    this.tokenCredential ??= new DefaultAzureCredential(
      clientId ? { managedIdentityClientId: clientId } : {},
    );
    return this.tokenCredential;
  }

  hasKey(account: string): boolean {
    return this.config.accountKeys.has(account);
  }

  blobService(loc: AccountLocation): BlobServiceClient {
    let svc = this.services.get(loc.serviceUrl);
    if (!svc) {
      const key = this.config.accountKeys.get(loc.account);
      const credential = key ? new StorageSharedKeyCredential(loc.account, key) : this.identity();
      svc = new BlobServiceClient(loc.serviceUrl, credential, this.pipelineOptions());
      this.services.set(loc.serviceUrl, svc);
    }
    return svc;
  }

  pageBlob(loc: BlobLocation, snapshot?: string): PageBlobClient {
    const client = this.blobService(loc).getContainerClient(loc.container).getPageBlobClient(loc.blob);
    return snapshot ? client.withSnapshot(snapshot) : client;
  }

  container(loc: BlobLocation) {
    return this.blobService(loc).getContainerClient(loc.container);
  }

  /** Read access to one snapshot for a server-side copy, never broader than that blob, never long-lived. */
  async sourceAuthorization(loc: BlobLocation, snapshot: string): Promise<SourceAuthorization> {
    const key = this.config.accountKeys.get(loc.account);
    const url = this.pageBlob(loc, snapshot).url;
    if (key) {
      const sas = generateBlobSASQueryParameters(
        {
          containerName: loc.container,
          blobName: loc.blob,
          snapshotTime: snapshot,
          permissions: BlobSASPermissions.parse("r"),
          startsOn: new Date(Date.now() - 5 * 60_000),
          expiresOn: new Date(Date.now() + SOURCE_SAS_MINUTES * 60_000),
        },
        new StorageSharedKeyCredential(loc.account, key),
      ).toString();
      return { url: `${url}${url.includes("?") ? "&" : "?"}${sas}` };
    }
    const token = await this.identity().getToken("https://storage.azure.com/.default");
    if (!token) throw new Error(`could not get a token to read ${loc.url}`);
    return { url, bearer: token.token };
  }

  /** A client of one queue in the storage that AzureWebJobsStorage names (the app's own queues). */
  queue(name: string): QueueClient {
    const storage = this.config.storage;
    if (!storage) throw new Error("no app storage configured (AzureWebJobsStorage)");
    if (storage.kind === "connectionString") return new QueueClient(storage.connectionString, name);
    if (!storage.queueServiceUri) throw new Error("AzureWebJobsStorage__queueServiceUri is not set");
    const url = `${storage.queueServiceUri.replace(/\/$/, "")}/${name}`;
    const account = /^https?:\/\/([^./]+)/.exec(storage.queueServiceUri)?.[1] ?? "";
    const key = this.config.accountKeys.get(account);
    return key
      ? new QueueClient(url, new QueueSharedKeyCredential(account, key))
      : new QueueClient(url, this.identity());
  }

  /** A client of one lineage table in the storage that AzureWebJobsStorage names. */
  table(name: string): TableClient {
    const storage = this.config.storage;
    if (!storage) throw new Error("no lineage storage configured (AzureWebJobsStorage)");
    const options = { allowInsecureConnection: true };
    if (storage.kind === "connectionString") {
      return TableClient.fromConnectionString(storage.connectionString, name, options);
    }
    const account = /^https?:\/\/([^./]+)/.exec(storage.tableServiceUri)?.[1] ?? "";
    const key = this.config.accountKeys.get(account);
    return key
      ? new TableClient(storage.tableServiceUri, name, new AzureNamedKeyCredential(account, key), options)
      : new TableClient(storage.tableServiceUri, name, this.identity(), options);
  }
}
