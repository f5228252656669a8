/**
 * Which credential reaches which endpoint, decided in one place: accounts named in
 * STORAGE_ACCOUNT_KEYS use their shared key; every other account, the lineage tables, the queues
 * and Azure Resource Manager use one DefaultAzureCredential (a managed identity in Azure, the
 * developer's login elsewhere). A token is requested only for a host that `hostProblem` accepts,
 * so no bearer token ever leaves for a host someone else chose. When no way of signing in works,
 * the error says which ways were tried and how to use each, as `az` does.
 */
import type { TableServiceClientOptions } from "@azure/data-tables";
import type { AccessToken, GetTokenOptions, TokenCredential } from "@azure/identity";
import { StorageSharedKeyCredential } from "@azure/storage-blob";
import { InputError } from "../core/errors";
import type { Config } from "../config/settings";
import { deadlinePolicy } from "./deadline";

export const STORAGE_SCOPE = "https://storage.azure.com/.default";
export const ARM_SCOPE = "https://management.azure.com/.default";

/** How to sign in, for the error a failed token request becomes. */
export const SIGN_IN_HELP =
  "no way of signing in to Azure worked. Tried, in order: environment (AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH), " +
  "workload identity, managed identity (in Azure; AzureWebJobsStorage__clientId picks a user-assigned one), Azure CLI (run 'az login'), Azure Developer CLI ('azd auth login') and Azure PowerShell ('Connect-AzAccount'). " +
  "For an emulator or a dev account, give its key in STORAGE_ACCOUNT_KEYS=account:base64key instead";

/** The failure of every credential in the chain, in one line a person can act on (exit code 2: set up sign-in). */
export class SignInError extends InputError {
  constructor(cause: unknown) {
    super([SIGN_IN_HELP]);
    this.name = "SignInError";
    this.cause = cause;
  }
}

/** Wraps a token credential so a failed chain is a SignInError and every request is recorded for tests. */
class ExplainingCredential implements TokenCredential {
  constructor(private readonly inner: TokenCredential) {}

  async getToken(scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken | null> {
    try {
      const token = await this.inner.getToken(scopes, options);
      if (!token) throw new Error("the credential returned no token");
      return token;
    } catch (err) {
      const name = (err as Error)?.name ?? "";
      if (
        /CredentialUnavailable|AggregateAuthentication|ChainedTokenCredential/i.test(
          `${name} ${(err as Error)?.message}`,
        )
      ) {
        throw new SignInError(err);
      }
      throw err;
    }
  }
}

/** Also the host policy of lib/storage/urls (allowed hosts, and which accounts have a key), by shape. */
export class AzureCredentials {
  private tokenCredential?: TokenCredential;
  readonly allowedHosts: readonly string[];

  constructor(
    private readonly config: Pick<Config, "accountKeys" | "storage" | "allowedHosts"> &
      Partial<Pick<Config, "requestTimeoutMs">>,
    /** A credential to use instead of DefaultAzureCredential (tests pass one that records its calls). */
    identity?: TokenCredential,
  ) {
    this.tokenCredential = identity && new ExplainingCredential(identity);
    this.allowedHosts = config.allowedHosts;
  }

  hasKey(account: string): boolean {
    return this.config.accountKeys.has(account);
  }

  key(account: string): string | undefined {
    return this.config.accountKeys.get(account);
  }

  sharedKey(account: string): StorageSharedKeyCredential | undefined {
    const key = this.config.accountKeys.get(account);
    return key ? new StorageSharedKeyCredential(account, key) : undefined;
  }

  /**
   * Options of the lineage's table clients: plain http allowed (emulators), the SDK's retries off
   * (the lineage is wrapped in the one retry policy), and every request under the request deadline
   * (DISKDELTA_REQUEST_TIMEOUT_SECONDS), so a table endpoint that never answers cannot hold a
   * command for ever.
   */
  tableClientOptions(): TableServiceClientOptions {
    return {
      allowInsecureConnection: true,
      retryOptions: { maxRetries: 0 },
      additionalPolicies: [
        { policy: deadlinePolicy(this.config.requestTimeoutMs ?? 60_000), position: "perRetry" },
      ],
    };
  }

  /**
   * The token credential, created once (it caches tokens). @azure/identity (about 20 MiB of
   * heap) is loaded only here, so a process that signs in with keys never carries it.
   */
  identity(): TokenCredential {
    if (!this.tokenCredential) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { DefaultAzureCredential } = require("@azure/identity") as typeof import("@azure/identity");
      const clientId = this.config.storage?.kind === "identity" ? this.config.storage.clientId : undefined;
      this.tokenCredential = new ExplainingCredential(
        new DefaultAzureCredential(clientId ? { managedIdentityClientId: clientId } : {}),
      );
    }
    return this.tokenCredential;
  }
}
