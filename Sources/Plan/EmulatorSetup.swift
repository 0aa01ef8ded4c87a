import Foundation
import Emulation
import Model

/// The emulated GPU of a run, resolved from the configuration: its profile (found by name
/// under configs/devices/ or given as a file), links, precision and clock mode.
public struct EmulatorSetup: Sendable {
    public let profile: DeviceProfile
    public let precision: Precision
    public let cost: CostModel
    public let mode: DeviceClock.Mode

    public static func resolve(_ c: RunConfig) throws -> EmulatorSetup {
        EmulatorSetup(profile: try findProfile(c.device), config: c)
    }

    /// The emulated GPU of `c` with the profile given (the configuration's precision, links and clock).
    public init(profile: DeviceProfile, config c: RunConfig) {
        let links = c.link == .ideal ? LinkModel.ideal(gpusPerNode: c.gpusPerNode)
            : LinkModel(intraNode: profile.intraNode, interNode: profile.interNode, gpusPerNode: c.gpusPerNode)
        self.profile = profile
        precision = c.precision
        cost = CostModel(device: profile, bytesPerElement: c.precision.elementBytes, links: links)
        mode = c.clock == .measured ? .measured(scale: c.clockScale) : .modeled
    }

    public func makeClock() -> DeviceClock { DeviceClock(mode: mode, cost: cost) }

    /// Directories searched for `NAME.json` device profiles, in order: `devices/` in each of
    /// `Installation.configDirectories`.
    public static var profileDirectories: [String] { Installation.configDirectories.map { $0 + "/devices" } }

    public static func findProfile(_ name: String) throws -> DeviceProfile {
        if name.hasSuffix(".json") || name.contains("/") {
            do { return try DeviceProfile.load(path: name) } catch { throw UsageError(String(describing: error)) }
        }
        for dir in profileDirectories {
            let path = dir + "/" + name + ".json"
            if FileManager.default.fileExists(atPath: path) {
                do { return try DeviceProfile.load(path: path) } catch { throw UsageError(String(describing: error)) }
            }
        }
        let known = Set(profileDirectories.flatMap { dir in
            ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }
        }).sorted()
        throw UsageError("unknown --device \(name): no \(name).json in \(profileDirectories.joined(separator: ", "))"
                         + (known.isEmpty ? "" : " (known: \(known.joined(separator: ", ")))"))
    }
}
