import Projection
import ArgumentParser
import Foundation
import Formats
import Plan

/// `moe-train validate [FILE...] [--json OUT]`: published training runs projected by the
/// cost model, with the error of each and the mean and max absolute error.
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Project published training runs (configs/published/*.json) and report the error against their measurements."
    )
    @Argument(help: "Published-run files (default: every file of published/ in the config directories).") var files: [String] = []
    @Option(help: "Write the rows and the errors as JSON here.") var json: String?
    @Option(help: "Fit the GEMM efficiency of the device to the runs whose names start with this prefix (such as narayanan2021), and report the error on those and on the runs held out.") var fit: String?

    func run() throws {
        do {
            let paths = try files.isEmpty ? Self.shipped() : files
            if let json { try JobPlan.checkOutputFile("--json", json) }   // before the work
            let text: String
            if let fit {
                text = try JSONText.encode(try Validate.fit(files: paths, prefix: fit) { print($0) })
            } else {
                text = try JSONText.encode(try Validate.run(files: paths) { print($0) })
            }
            if let json {
                try AtomicFile.write(text, to: json)
                print("written to \(json)")
            }
        } catch let e as UsageError {
            throw ValidationError(e.description)
        } catch let e as JSONText.DecodeError {
            throw ValidationError(e.description)
        }
    }

    /// The JSON files of the first `published` directory among the config directories.
    static func shipped() throws -> [String] {
        guard let dir = Installation.findConfig("published") else {
            throw UsageError("no published/ directory found (\(Installation.searchedDescription)); name the files or set MOE_TRAIN_CONFIGS")
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        let paths = names.filter { $0.hasSuffix(".json") }.sorted().map { dir + "/" + $0 }
        guard !paths.isEmpty else { throw UsageError("\(dir) holds no .json files") }
        return paths
    }
}
