import Foundation

/// The GPU a rank plays: peak dense throughput, memory, bandwidth, default efficiencies,
/// and the two link classes of its cluster. Loaded from `configs/devices/NAME.json`.
public struct DeviceProfile: Sendable, Equatable {
    public var name: String
    /// Peak dense bf16/fp16 tensor-core FLOP/s.
    public var peakFLOPS: Double
    /// HBM capacity in bytes.
    public var memoryBytes: Double
    /// HBM bandwidth in bytes/s.
    public var memoryBandwidth: Double
    /// Share of peak FLOP/s a well-shaped GEMM reaches.
    public var flopsEfficiency: Double
    /// Share of peak HBM bandwidth a streaming kernel reaches.
    public var memoryEfficiency: Double
    /// Fixed cost per kernel launch, seconds.
    public var kernelLaunchSeconds: Double
    /// Links inside a node (NVLink) and between nodes (InfiniBand / RoCE), with the
    /// bandwidth collectives reach (the link's `beta_bytes_per_s` times its `efficiency`).
    public var intraNode: LinkClass
    public var interNode: LinkClass
    /// The share of the NVLink bandwidth that transfers inside a node reach (collectives and
    /// point-to-point messages; `efficiency` in the link's object, default 1), already applied
    /// to `intraNode` (and `inter_node`'s to `interNode`).
    public private(set) var intraNodeEfficiency = 1.0
    /// Where each constant comes from (the profile's `calibration` object: key, then text).
    public var calibration: [String: String] = [:]

    /// The same device with collectives inside a node reaching `efficiency` of the NVLink bandwidth.
    public func withIntraNodeEfficiency(_ efficiency: Double) -> DeviceProfile {
        var p = self
        p.intraNode.beta = intraNode.beta / intraNodeEfficiency * efficiency
        p.intraNodeEfficiency = efficiency
        return p
    }
    public var source: String
    /// Peak dense FP8 FLOP/s, where the device has FP8 tensor cores.
    public var peakFLOPSFP8: Double? = nil
    /// Device-to-host bytes/s (the PCIe link), for snapshots of asynchronous checkpoints.
    /// Default: PCIe Gen4 x16, 32 GB/s each way, of which about 25 GB/s is reached.
    public var hostBandwidth = 25e9

    public init(name: String, peakFLOPS: Double, memoryBytes: Double, memoryBandwidth: Double,
                flopsEfficiency: Double, memoryEfficiency: Double, kernelLaunchSeconds: Double,
                intraNode: LinkClass, interNode: LinkClass, source: String = "") {
        self.name = name; self.peakFLOPS = peakFLOPS; self.memoryBytes = memoryBytes
        self.memoryBandwidth = memoryBandwidth; self.flopsEfficiency = flopsEfficiency
        self.memoryEfficiency = memoryEfficiency; self.kernelLaunchSeconds = kernelLaunchSeconds
        self.intraNode = intraNode; self.interNode = interNode; self.source = source
    }

    public struct ProfileError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads a profile from JSON. Keys: name, peak_flops, memory_bytes, memory_bandwidth,
    /// flops_efficiency, memory_efficiency, kernel_launch_s, intra_node {alpha_s, beta_bytes_per_s},
    /// inter_node {...}, source (free text: where the figures come from).
    public static func load(path: String) throws -> DeviceProfile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ProfileError(description: "device profile \(path) cannot be read")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ProfileError(description: "device profile \(path) is not a JSON object")
        }
        func num(_ key: String, in o: [String: Any], _ context: String) throws -> Double {
            guard let v = o[key] as? NSNumber, v.doubleValue.isFinite, v.doubleValue >= 0 else {
                throw ProfileError(description: "device profile \(path): \(context)\(key) must be a non-negative number")
            }
            return v.doubleValue
        }
        func efficiency(_ key: String) throws -> Double {
            guard let o = obj[key] as? [String: Any], o["efficiency"] != nil else { return 1 }
            let e = try num("efficiency", in: o, key + ".")
            guard e > 0, e <= 1 else { throw ProfileError(description: "device profile \(path): \(key).efficiency must be in (0, 1]") }
            return e
        }
        func link(_ key: String) throws -> LinkClass {
            guard let o = obj[key] as? [String: Any] else {
                throw ProfileError(description: "device profile \(path): \(key) must be an object {alpha_s, beta_bytes_per_s}")
            }
            let beta = try num("beta_bytes_per_s", in: o, key + ".")
            guard beta > 0 else { throw ProfileError(description: "device profile \(path): \(key).beta_bytes_per_s must be positive") }
            return LinkClass(alpha: try num("alpha_s", in: o, key + "."), beta: beta * (try efficiency(key)))
        }
        let p = DeviceProfile(
            name: obj["name"] as? String ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent,
            peakFLOPS: try num("peak_flops", in: obj, ""), memoryBytes: try num("memory_bytes", in: obj, ""),
            memoryBandwidth: try num("memory_bandwidth", in: obj, ""),
            flopsEfficiency: try num("flops_efficiency", in: obj, ""), memoryEfficiency: try num("memory_efficiency", in: obj, ""),
            kernelLaunchSeconds: try num("kernel_launch_s", in: obj, ""),
            intraNode: try link("intra_node"), interNode: try link("inter_node"),
            source: obj["source"] as? String ?? "")
        var profile = p
        profile.peakFLOPSFP8 = (obj["peak_flops_fp8"] as? NSNumber)?.doubleValue
        profile.intraNodeEfficiency = try efficiency("intra_node")
        profile.calibration = (obj["calibration"] as? [String: Any])?.compactMapValues { $0 as? String } ?? [:]
        if obj["host_bandwidth"] != nil {
            profile.hostBandwidth = try num("host_bandwidth", in: obj, "")
            guard profile.hostBandwidth > 0 else { throw ProfileError(description: "device profile \(path): host_bandwidth must be positive") }
        }
        guard p.peakFLOPS > 0, p.memoryBandwidth > 0, p.flopsEfficiency > 0, p.flopsEfficiency <= 1,
              p.memoryEfficiency > 0, p.memoryEfficiency <= 1 else {
            throw ProfileError(description: "device profile \(path): peak_flops and memory_bandwidth must be positive, efficiencies in (0, 1]")
        }
        return profile
    }
}

/// One class of link: latency alpha (s) and bandwidth beta (bytes/s) per direction.
public struct LinkClass: Sendable, Equatable {
    public var alpha: Double
    public var beta: Double
    public init(alpha: Double, beta: Double) { self.alpha = alpha; self.beta = beta }
    /// A link that costs nothing: for checking schedules against closed forms.
    public static let ideal = LinkClass(alpha: 0, beta: .infinity)
    /// Seconds to move `bytes` once over this link.
    public func seconds(_ bytes: Double) -> Double { alpha + (beta.isInfinite ? 0 : bytes / beta) }
}
