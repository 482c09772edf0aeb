/**
 * The agent's resource: who is reporting. service.name and service.version, the host (host.name,
 * host.arch, host.id) and its kernel (os.type, os.version = the kernel release, which decides
 * what stats exist), then OTEL_RESOURCE_ATTRIBUTES / --resource-attributes on top.
 */
import { type Resource, defaultResource, detectResources, hostDetector, osDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { SCOPE_VERSION } from '../otel/version.js';

export function agentResource(serviceName: string, attributes: Readonly<Record<string, string>>): Resource {
  return defaultResource()
    .merge(detectResources({ detectors: [hostDetector, osDetector] }))
    .merge(resourceFromAttributes({ 'service.version': SCOPE_VERSION, ...attributes, 'service.name': serviceName }));
}
