//! A restart on the same data dir keeps users, tokens, images and id sequences.

use facesim_client::pb;
use facesim_tests::{demo_subset, import_demo, TestServer};

#[tokio::test]
async fn restart_keeps_everything() {
    let server = TestServer::start().await;
    let annotator = server.user("anna", pb::Role::Annotator).await;
    let client = server.admin().await;
    let first = import_demo(&client, 2).await;
    assert_eq!(first.imported, 10);
    let before = client
        .datasets()
        .list_images(pb::ListImagesRequest { page_size: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let face_before = client
        .datasets()
        .get_image_data(pb::GetImageDataRequest {
            image_id: first.results[3].image_id,
            variant: pb::ImageVariant::Face as i32,
        })
        .await
        .unwrap()
        .into_inner();
    drop(client);

    let server = server.restart().await;
    let client = server.admin().await;
    let after = client
        .datasets()
        .list_images(pb::ListImagesRequest { page_size: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.images, before.images);
    let face_after = client
        .datasets()
        .get_image_data(pb::GetImageDataRequest {
            image_id: first.results[3].image_id,
            variant: pb::ImageVariant::Face as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(face_after.data, face_before.data);

    // Tokens made before the restart still work; the bootstrap admin was not duplicated.
    let anna = server.client(Some(&annotator)).await;
    let me = anna.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().user.unwrap();
    assert_eq!((me.name.as_str(), me.role), ("anna", pb::Role::Annotator as i32));
    let users = client.admin().list_users(pb::ListUsersRequest::default()).await.unwrap().into_inner().users;
    assert_eq!(users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), vec!["admin", "anna"]);

    // Duplicates are still recognised and new ids continue after the old ones.
    let again = client.import_files("demo", demo_subset(3), |_, _| {}).await.unwrap();
    assert_eq!((again.imported, again.duplicates), (5, 10));
    let max_before = first.results.iter().map(|r| r.image_id).max().unwrap();
    assert!(again
        .results
        .iter()
        .filter(|r| r.outcome == pb::ImportOutcome::Imported as i32)
        .all(|r| r.image_id > max_before));
}
