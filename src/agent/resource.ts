/**
 * The agent's resource: who is reporting. service.name, service.version and service.instance.id
 * (the host's name: one agent per host), the host (host.name, host.arch, host.id) and its kernel
 * (os.type, os.version = the kernel release, which decides what stats exist), then
 * OTEL_RESOURCE_ATTRIBUTES / --resource-attributes on top. Through a collector into Prometheus,
 * service.name becomes the `job` label and service.instance.id the `instance` label: without it
 * every host's series would share an empty instance and collide.
 */
import { type Resource, defaultResource, detectResources, hostDetector, osDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { hostname } from 'node:os';
import { SCOPE_VERSION } from '../otel/version.js';

export function agentResource(serviceName: string, attributes: Readonly<Record<string, string>>): Resource {
  return defaultResource()
    .merge(detectResources({ detectors: [hostDetector, osDetector] }))
    .merge(resourceFromAttributes({ 'service.version': SCOPE_VERSION, 'service.instance.id': hostname(), ...attributes, 'service.name': serviceName }));
}
